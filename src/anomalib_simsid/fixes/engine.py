"""The ``Engine`` fixes: checkpoint check, the test after a resumed fit, run folders, predict reader.

Each wraps ``Engine`` methods and acts only when the model handed to them is SimSID (see
:data:`..FIXES`); for any other model the wrapper calls anomalib's method unchanged.
"""

from __future__ import annotations

import csv
import functools
import inspect
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from anomalib import LearningType

from anomalib_simsid.models import SimSID
from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError, check_structure, read_checkpoint
from anomalib_simsid.models.simsid.training.resume import RUN_DIR_KEY

from .predict import package_reader, unicode_paths

EngineFix = Callable[[Callable[..., Any], Any, dict[str, Any]], Any]


def _for_simsid(method: Callable[..., Any], fix: EngineFix) -> Callable[..., Any]:
    """``fix(call, engine, arguments)`` when the call's model is SimSID, else ``method`` unchanged."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        model = arguments.get("model")
        if model is None and getattr(self, "_trainer", None) is not None:
            model = self._trainer.lightning_module
        if not isinstance(model, SimSID):
            return method(self, *args, **kwargs)
        return fix(lambda: method(self, *args, **kwargs), self, arguments)

    return wrapper


def _wrap(module: ModuleType, names: tuple[str, ...], fix: EngineFix) -> None:
    for name in names:
        setattr(module.Engine, name, _for_simsid(getattr(module.Engine, name), fix))


# ------------------------------------------------------------------------------------ checkpoint


def _check_checkpoint(call: Callable[[], Any], _engine: Any, arguments: dict[str, Any]) -> Any:
    """Refuse an unreadable or foreign checkpoint, naming the file, before Lightning reads it."""
    path = arguments.get("ckpt_path")
    if path:
        # None: it holds objects that only Lightning's checkpoint IO may allow; Lightning decides.
        checkpoint = read_checkpoint(path, mmap=True, allow_objects=True)
        if checkpoint is not None:
            check_structure(checkpoint, path)
    return call()


def apply_checkpoint_check(module: ModuleType) -> None:
    """Check ``ckpt_path`` up front in every ``Engine`` entry point that takes one (``export`` too)."""
    _wrap(module, ("fit", "validate", "test", "train", "predict", "export"), _check_checkpoint)


# ----------------------------------------------------------------------------- test after resume


def _test_trained_model(call: Callable[[], Any], engine: Any, arguments: dict[str, Any]) -> Any:
    """Let the test inside ``Engine.train(ckpt_path=X)`` run on the trained model, not on ``X`` again."""
    fitted = arguments["model"].learning_type not in {LearningType.ZERO_SHOT, LearningType.FEW_SHOT}
    if not (arguments.get("ckpt_path") and fitted):
        return call()
    setup_trainer = engine._setup_trainer

    def setup_trainer_testing_the_fitted_model(model: Any) -> None:
        setup_trainer(model)
        trainer_test = engine.trainer.test

        def test(*test_args: Any, ckpt_path: Any = None, **test_kwargs: Any) -> Any:
            del ckpt_path  # the resume checkpoint: loading it would undo the training just done
            return trainer_test(*test_args, **test_kwargs)

        engine.trainer.test = test

    engine._setup_trainer = setup_trainer_testing_the_fitted_model
    try:
        return call()
    finally:
        del engine._setup_trainer
        if engine._trainer is not None:
            engine._trainer.__dict__.pop("test", None)


def apply_resume_test(module: ModuleType) -> None:
    """Wrap ``Engine.train``."""
    _wrap(module, ("train",), _test_trained_model)


# ----------------------------------------------------------------------------------- run folders


def _run_folders(
    call: Callable[[], Any], engine: Any, arguments: dict[str, Any], predict: bool = False
) -> Any:
    """Resume into the resumed run's folders; after a failure remove what the run left empty.

    ``predict`` gets a new run folder of its own (anomalib writes into ``latest``, the last training's).
    Under DDP only global rank 0 manages the folders; the other ranks, started by rank 0 once its
    folder exists, use that folder and touch nothing (two ranks cleaning up raced: rank 0 removed an
    empty run's folders while rank 1 re-pointed ``latest`` into them).
    """
    import anomalib.engine.engine as module

    if _is_nonzero_rank():
        return _in_rank_zeros_folder(call, module)
    ckpt = None if predict else arguments.get("ckpt_path")
    resumed = _resumed_run_dir(ckpt) if ckpt else None
    loggers = _loggers(engine)
    before = {
        id(logger): _children(Path(logger.root_dir)) for logger in loggers if hasattr(logger, "root_dir")
    }
    # Folders this run may create above its own (results/SimSID/<set>, logs/<name>): removed with it.
    fresh = [_missing_folders(Path(logger.root_dir)) for logger in loggers if hasattr(logger, "root_dir")]
    if ckpt:
        for logger in loggers:
            _resume_logger_version(logger, Path(ckpt))
    created: list[tuple[Path, Path | None, Path, bool]] = []
    create_versioned_dir = module.create_versioned_dir

    def create(root_dir: str | Path) -> Path:
        root = Path(root_dir).resolve()
        latest = root / "latest"
        previous = latest.resolve() if latest.is_symlink() else None
        if resumed is not None and resumed.parent == root and resumed.is_dir():
            _point_latest(latest, resumed)
            created.append((latest, previous, resumed, False))
            return resumed
        fresh.append(_missing_folders(root))
        new_dir = new_run_dir(root)
        created.append((latest, previous, new_dir, True))
        return new_dir

    module.create_versioned_dir = create
    if predict:
        setup_workspace = engine._setup_workspace
        engine._setup_workspace = functools.partial(setup_workspace, versioned_dir=True)
    start = time.time()
    try:
        result = call()
    except BaseException:  # also KeyboardInterrupt and Lightning's exit after one
        saved = _saved_checkpoints(engine, since=start)
        for latest, previous, run_dir, new in created:
            if new and not saved and not _has_files(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
                _point_latest(latest, previous)
        for logger in loggers:
            log_dir = _log_dir(logger)
            if (
                log_dir is not None
                and log_dir not in before.get(id(logger), set())
                and not _has_files(log_dir)
            ):
                shutil.rmtree(log_dir, ignore_errors=True)
        for folders in fresh:
            _remove_if_empty(folders)
        raise
    else:
        # `anomalib fit` with the configs' checkpoints under logs/ writes nothing into its v<n>
        for latest, previous, run_dir, new in created:
            if new and not predict and not _has_files(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
                _point_latest(latest, previous)
        for folders in fresh:
            _remove_if_empty(folders)
        return result
    finally:
        module.create_versioned_dir = create_versioned_dir
        engine.__dict__.pop("_setup_workspace", None)


def _is_nonzero_rank() -> bool:
    """Whether this process is a DDP rank other than 0 (Lightning's launcher sets it before the script)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) != 0


def _in_rank_zeros_folder(call: Callable[[], Any], module: ModuleType) -> Any:
    """Run ``call`` with the run folder rank 0 made (``latest``); create or remove nothing.

    Where no ``latest`` exists yet (a launcher that starts all ranks at once) anomalib's own folder.
    """
    create_versioned_dir = module.create_versioned_dir

    def existing(root_dir: str | Path) -> Path:
        latest = Path(root_dir).resolve() / "latest"
        return latest.resolve() if latest.is_symlink() else create_versioned_dir(root_dir)

    module.create_versioned_dir = existing
    try:
        return call()
    finally:
        module.create_versioned_dir = create_versioned_dir


def new_run_dir(root: Path) -> Path:
    """Create the next ``v<n>`` under ``root`` and point ``latest`` at it, safe against concurrent runs.

    anomalib's ``create_versioned_dir`` reads the highest version, then creates the next: two runs
    started together pick the same ``v<n>`` and the second fails (or, for ``predict``, which reuses
    ``latest``, overwrites the first one's ``predictions.csv``). ``mkdir`` is atomic, so a run that
    loses the race takes the next number.
    """
    root.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = [int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit() and p.is_dir()]
        new_dir = root / f"v{max(numbers, default=-1) + 1}"
        try:
            new_dir.mkdir()
        except FileExistsError:
            continue
        _point_latest(root / "latest", new_dir)
        return new_dir


def _loggers(engine: Any) -> list[Any]:
    value = engine._cache.args.get("logger")
    loggers = value if isinstance(value, list) else [value]
    return [logger for logger in loggers if logger is not None and not isinstance(logger, bool)]


def _children(folder: Path) -> set[Path]:
    return {child.resolve() for child in folder.iterdir()} if folder.is_dir() else set()


def _log_dir(logger: Any) -> Path | None:
    if getattr(logger, "_version", None) is None or not hasattr(logger, "log_dir"):
        return None
    return Path(logger.log_dir).resolve()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first, gone ones skipped) up to the first that is not empty."""
    for folder in folders:
        if not folder.is_dir():
            continue
        if any(folder.iterdir()):
            return
        folder.rmdir()


def _has_files(folder: Path) -> bool:
    """Whether ``folder`` holds a file other than a logger's ``hparams.yaml`` (a run that never ran)."""
    return folder.is_dir() and any(p.is_file() and p.name != "hparams.yaml" for p in folder.rglob("*"))


def _saved_checkpoints(engine: Any, since: float) -> bool:
    """Whether this run's checkpoint callbacks wrote a checkpoint (wherever) after ``since``."""
    trainer = engine._trainer
    callbacks = getattr(trainer, "checkpoint_callbacks", []) if trainer is not None else []
    paths = [getattr(c, name, "") for c in callbacks for name in ("last_model_path", "best_model_path")]
    return any(path and Path(path).is_file() and Path(path).stat().st_mtime >= since - 1 for path in paths)


def _resumed_run_dir(ckpt: str | Path) -> Path | None:
    """Return the ``v<n>`` folder of the run that saved ``ckpt`` (SimSID records it in the checkpoint)."""
    try:
        checkpoint = read_checkpoint(ckpt, mmap=True, allow_objects=True)
    except (FileNotFoundError, NotSimSIDError):
        return None
    run_dir = checkpoint.get(RUN_DIR_KEY) if checkpoint is not None else None
    return Path(run_dir).resolve() if isinstance(run_dir, str) else None


def _resume_logger_version(logger: Any, ckpt: Path) -> None:
    """Log into the ``version_<n>`` folder that holds ``ckpt`` (CSV metrics kept), if the logger has one."""
    if getattr(logger, "_version", "fixed") is not None or not hasattr(logger, "root_dir"):
        return
    try:
        relative = ckpt.resolve().relative_to(Path(logger.root_dir).resolve())
    except ValueError:
        return
    version = relative.parts[0] if relative.parts else ""
    if not (version.startswith("version_") and version[len("version_") :].isdigit()):
        return
    logger._version = int(version[len("version_") :])
    metrics = Path(logger.log_dir) / "metrics.csv"
    saved = metrics.read_text() if metrics.is_file() else None
    with warnings.catch_warnings():  # "previous log files ... will be deleted": not so, see below
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment  # a new CSV writer deletes the folder's metrics.csv: put it back
    if saved is not None and hasattr(writer, "metrics_keys"):
        metrics.write_text(saved)
        writer.metrics_keys = sorted(next(csv.reader(saved.splitlines()), []))


def _point_latest(latest: Path, target: Path | None) -> None:
    """Point ``latest`` at ``target`` atomically (a temporary link renamed over it); remove it if None."""
    if target is None:
        latest.unlink(missing_ok=True)
        return
    if os.name == "nt":  # Windows uses junctions, left as anomalib made them
        return
    temporary = latest.with_name(f".{latest.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, latest)


def apply_run_folders(module: ModuleType) -> None:
    """Wrap ``Engine.fit``, ``Engine.train`` and ``Engine.predict``."""
    _wrap(module, ("fit", "train"), _run_folders)
    _wrap(module, ("predict",), functools.partial(_run_folders, predict=True))


# ---------------------------------------------------------------------------------- predict reader


def _predict_with_package_reader(call: Callable[[], Any], _engine: Any, arguments: dict[str, Any]) -> Any:
    if arguments.get("data_path") is None:
        return call()
    with package_reader():
        return call()


def apply_predict_reader(module: ModuleType) -> None:
    """Wrap ``Engine.predict``."""
    _wrap(module, ("predict",), _predict_with_package_reader)


def _predict_unicode_paths(call: Callable[[], Any], _engine: Any, _arguments: dict[str, Any]) -> Any:
    with unicode_paths():
        return call()


def apply_unicode_paths(module: ModuleType) -> None:
    """Wrap ``Engine.predict``."""
    _wrap(module, ("predict",), _predict_unicode_paths)
