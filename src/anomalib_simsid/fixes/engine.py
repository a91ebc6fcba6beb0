"""Two anomalib 2.7 ``Engine`` traps around training runs.

* **Resumed runs tested the checkpoint they resumed from.** ``Engine.train(..., ckpt_path=X)`` fits
  from ``X`` and then calls ``trainer.test(model, ckpt_path=X)``, which reloads ``X`` over the freshly
  trained weights: a resumed ``anomalib train --ckpt_path X`` printed (and returned) the test metrics
  of ``X``. The patch passes ``ckpt_path`` to the fit only, so the test inside that ``train`` call
  runs on the trained model. Zero- and few-shot models, which ``train`` only validates, are unchanged.
* **A failed run hid the previous good one.** ``Engine.fit``/``train`` create the next version folder
  and re-point its ``latest`` link at once; when the run then fails or is interrupted before writing
  any checkpoint there, ``latest/...`` names an empty folder. The patch points ``latest`` back to the
  folder it named before (or removes a link it created) in that case; the failed run's ``vN`` folder
  stays for inspection.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anomalib import LearningType

_MARK = "_anomalib_simsid_patched"
# (latest link, folder it named before or None, new version folder) per version folder created.
_CREATED: list[tuple[Path, Path | None, Path]] = []


def apply() -> None:
    """Patch ``anomalib.engine.engine`` once it has been fully imported.

    When the plugin is imported from inside ``anomalib.engine``'s own import (through
    ``anomalib.models``), ``Engine`` does not exist yet; the autoload hook calls this again as soon
    as that module has run.
    """
    module = sys.modules.get("anomalib.engine.engine")
    if module is None:
        import anomalib.engine.engine as module
    engine = getattr(module, "Engine", None)
    if engine is None or getattr(engine.train, _MARK, False):
        return
    engine.train = _keep_latest_on_failure(_test_trained_model(engine.train))
    engine.fit = _keep_latest_on_failure(engine.fit)
    if not sys.platform.startswith("win"):  # Windows uses junctions, left as they are
        module.create_versioned_dir = _remember_latest(module.create_versioned_dir)


def _test_trained_model(train: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(train)

    @functools.wraps(train)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        fitted = arguments["model"].learning_type not in {LearningType.ZERO_SHOT, LearningType.FEW_SHOT}
        if not (arguments.get("ckpt_path") and fitted):
            return train(self, *args, **kwargs)
        setup_trainer = self._setup_trainer

        def setup_trainer_testing_the_fitted_model(model: Any) -> None:
            setup_trainer(model)
            trainer_test = self.trainer.test

            def test(*test_args: Any, ckpt_path: Any = None, **test_kwargs: Any) -> Any:
                del ckpt_path  # the resume checkpoint: loading it would undo the training just done
                return trainer_test(*test_args, **test_kwargs)

            self.trainer.test = test

        self._setup_trainer = setup_trainer_testing_the_fitted_model
        try:
            return train(self, *args, **kwargs)
        finally:
            del self._setup_trainer
            if self._trainer is not None:
                self._trainer.__dict__.pop("test", None)

    return wrapper


def _remember_latest(create: Callable[..., Path]) -> Callable[..., Path]:
    @functools.wraps(create)
    def wrapper(root_dir: str | Path) -> Path:
        latest = Path(root_dir).resolve() / "latest"
        previous = latest.resolve() if latest.is_symlink() else None
        new_dir = Path(create(root_dir))
        _CREATED.append((latest, previous, new_dir))
        return new_dir

    return wrapper


def _keep_latest_on_failure(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = len(_CREATED)
        try:
            return method(self, *args, **kwargs)
        except BaseException:  # also KeyboardInterrupt and Lightning's exit after one
            for latest, previous, new_dir in _CREATED[start:]:
                if not any(new_dir.rglob("*.ckpt")):
                    _point_latest(latest, previous)
            raise
        finally:
            del _CREATED[start:]

    setattr(wrapper, _MARK, True)
    return wrapper


def _point_latest(latest: Path, target: Path | None) -> None:
    """Point ``latest`` at ``target`` atomically (a temporary link renamed over it); remove it if None."""
    if target is None:
        latest.unlink(missing_ok=True)
        return
    temporary = latest.with_name(f".{latest.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, latest)
