"""The suite's YAML schema: models, datasets, and their expansion into jobs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.audit.baselines import BASELINE_STATISTICS, StatisticBaseline, label
from benchmarks.common import safe_name

STATISTIC_CLASS_PATH = f"{StatisticBaseline.__module__}.{StatisticBaseline.__name__}"

SEED_TOKEN = "${seed}"
STATISTICS_ALIAS = "statistics"  # --models statistics: every statistic baseline
# Every test image's raw score of a suite output folder, gzipped: 12 rows of 1,000 images are over 1 MiB.
SCORES_FILE = "scores.csv.gz"
SELECT = ("last", "best_val_auroc")  # checkpoints a model can be tested at; "last" is always tested first
SELECT_LABEL = {"last": "last", "best_val_auroc": "best val"}
# Image score read-outs: "score" is the model's own image score (anomalib's pred_score; the anomaly
# map's maximum where a model has none), "mean" the mean of its anomaly map over pixels.
READOUTS = ("score", "mean")


@dataclass
class ModelSpec:
    """One model of the suite, with its own trainer budget (``max_epochs``) and data overrides."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 1
    trainer: dict[str, Any] = field(default_factory=dict)  # extra Engine/Trainer arguments
    data: dict[str, Any] = field(default_factory=dict)  # datamodule init_args overrides
    seeds: list[int] | None = None  # overrides the suite's seeds
    # Checkpoint(s) to test, one result row each, all from the same training run: "last" (the model
    # when training stops) and/or "best_val_auroc" (the epoch with the best validation AUROC).
    select: str | list[str] = "last"
    checkpoint: bool = False  # save last.ckpt every epoch (resumable); implied by best_val_auroc
    settings: str = ""  # one line for the tables (backbone, sizes, budget)
    # Record every SimSID score on validation and test after each epoch (ScoreCurves) into the job
    # folder's curves.csv and per_image.csv: the paper's score and the alternatives from one training.
    curves: bool = False
    # Image score read-outs of the same run, one result row each (see READOUTS), e.g. [score, mean]
    # gives the rows "PaDiM" and "PaDiM (mean)": how the map is read out moves AUROC as much as the model.
    readouts: list[str] = field(default_factory=lambda: ["score"])

    @property
    def selects(self) -> list[str]:
        """``select`` as a list in testing order."""
        chosen = [self.select] if isinstance(self.select, str) else list(self.select)
        return [s for s in SELECT if s in chosen]

    def entry(self, select: str, readout: str = "score") -> str:
        """Name of one result row: the model, plus the checkpoint when it tests several, plus the read-out."""
        name = self.name if len(self.selects) == 1 else f"{self.name}, {SELECT_LABEL[select]}"
        return name if readout == "score" else f"{name} ({readout})"

    @property
    def entries(self) -> list[tuple[str, str]]:
        """``(select, readout)`` of every result row, in table order."""
        return [(select, readout) for select in self.selects for readout in self.readouts]


@dataclass
class DataSpec:
    """One dataset (datamodule); ``"${seed}"`` anywhere in ``init_args`` becomes the job's seed."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """Everything a job needs, JSON-serialisable so it can cross into a subprocess."""

    job_id: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    seed: int
    accelerator: str
    job_dir: str
    latency_images: int
    resume: bool = False
    torch_threads: int | None = None
    keep_checkpoints: bool = False  # keep last.ckpt (and the best one) after scoring

    @property
    def spec_hash(self) -> str:
        """Identity of the job's settings, so ``--resume`` never reuses a result of other settings."""
        # A key added to ModelSpec later enters the hash only when set, so earlier rows keep theirs.
        defaults = {"curves": False, "readouts": ["score"]}
        model = {k: v for k, v in self.model.items() if not (k in defaults and v == defaults[k])}
        payload = json.dumps([self.dataset, model, self.seed, self.accelerator], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fields(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    known = set(cls.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        msg = f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(known)})"
        raise ValueError(msg)
    return raw


def _check_model(spec: ModelSpec, where: str) -> None:
    chosen = [spec.select] if isinstance(spec.select, str) else spec.select
    if not chosen or not set(chosen) <= set(SELECT):
        msg = f"{where}: model {spec.name}: select must be one or a list of {SELECT}, got {spec.select!r}"
        raise ValueError(msg)
    if not spec.readouts or not set(spec.readouts) <= set(READOUTS):
        msg = f"{where}: model {spec.name}: readouts must be a non-empty list of {READOUTS}: {spec.readouts}"
        raise ValueError(msg)
    every = spec.trainer.get("check_val_every_n_epoch", 1)
    if every != 1:  # best_val_auroc and the per-epoch history need a validation at each epoch end
        msg = f"{where}: model {spec.name}: check_val_every_n_epoch must be 1, got {every}"
        raise ValueError(msg)


def statistic_models(raw: Any, where: str) -> list[ModelSpec]:
    """Expand ``statistic_baselines: {image_size, statistics}`` into models named ``stat: <statistic>``."""
    if not raw:
        return []
    if not isinstance(raw, dict) or "image_size" not in raw or set(raw) - {"image_size", "statistics"}:
        msg = (
            f"{where}: statistic_baselines must be a mapping with image_size (the models' input size, px) "
            "and optionally statistics"
        )
        raise ValueError(msg)
    statistics = raw.get("statistics", list(BASELINE_STATISTICS))
    unknown = sorted(set(statistics) - set(BASELINE_STATISTICS))
    if unknown:
        msg = f"{where}: statistic_baselines: unknown {unknown} (allowed: {list(BASELINE_STATISTICS)})"
        raise ValueError(msg)
    return [
        ModelSpec(
            name=StatisticBaseline(statistic).name,
            class_path=STATISTIC_CLASS_PATH,
            init_args={"statistic": statistic, "image_size": int(raw["image_size"])},
            max_epochs=0,
            seeds=[0],
            settings=f"{label(statistic)} of the grey {raw['image_size']}-px image, sign chosen on val",
        )
        for statistic in statistics
    ]


def is_statistic(spec: ModelSpec) -> bool:
    """Whether a model of the config is a statistic baseline."""
    return spec.class_path == STATISTIC_CLASS_PATH


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a suite YAML (see ``benchmarks/configs/smoke.yaml`` for every key)."""
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict):
        msg = f"{path}: expected a mapping"
        raise ValueError(msg)
    for key in ("models", "datasets"):
        if not config.get(key):
            msg = f"{path}: '{key}' must be a non-empty list"
            raise ValueError(msg)
    config["models"] = [ModelSpec(**_fields(ModelSpec, m, f"{path}: model")) for m in config["models"]]
    config["models"] += statistic_models(config.get("statistic_baselines"), str(path))
    config["datasets"] = [DataSpec(**_fields(DataSpec, d, f"{path}: dataset")) for d in config["datasets"]]
    for spec in config["models"]:
        _check_model(spec, str(path))
    names = [m.name for m in config["models"]] + [d.name for d in config["datasets"]]
    if len(set(names)) != len(names):
        msg = f"{path}: model and dataset names must be unique, got {names}"
        raise ValueError(msg)
    config.setdefault("name", Path(path).stem)
    config.setdefault("seeds", [0])
    config.setdefault("accelerator", "cpu")
    config.setdefault("latency_images", 20)
    config.setdefault("torch_threads", None)
    config.setdefault("env", {})
    config.setdefault("backbones", [])
    config.setdefault("published", [])
    config.setdefault("notes", [])
    config.setdefault("output_dir", f"benchmarks/results/{config['name']}")
    config.setdefault("work_dir", f"benchmarks/work/{config['name']}")
    return config


def set_data_roots(config: dict[str, Any], roots: list[str]) -> None:
    """Apply ``--data-root DATASET=PATH`` overrides, so configs need no machine paths."""
    datasets = {d.name: d for d in config["datasets"]}
    for item in roots:
        name, sep, path = item.partition("=")
        if not sep or name not in datasets:
            msg = f"--data-root: expected DATASET=PATH with DATASET one of {sorted(datasets)}, got {item!r}"
            raise ValueError(msg)
        datasets[name].init_args["root"] = path


def select_models(config: dict[str, Any], names: str) -> None:
    """Keep only the models named in ``--models`` (comma-separated); the others show as not run.

    ``statistics`` stands for every statistic baseline of the config.
    """
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if STATISTICS_ALIAS in wanted:
        wanted.remove(STATISTICS_ALIAS)
        wanted += [m.name for m in config["models"] if is_statistic(m)]
    known = [m.name for m in config["models"]]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        msg = f"--models: unknown {unknown} (the config has {known})"
        raise ValueError(msg)
    config["run_models"] = wanted


def _substitute(value: Any, seed: int) -> Any:
    if value == SEED_TOKEN:
        return seed
    if isinstance(value, dict):
        return {k: _substitute(v, seed) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, seed) for v in value]
    return value


def expand_jobs(config: dict[str, Any], resume: bool = False, keep_checkpoints: bool = False) -> list[Job]:
    """Expand datasets x models x seeds into jobs (a model's own ``seeds`` win)."""
    jobs = []
    work = Path(config["work_dir"]).resolve()
    run_models = config.get("run_models")
    for data in config["datasets"]:
        for model in config["models"]:
            if run_models is not None and model.name not in run_models:
                continue
            for seed in model.seeds if model.seeds is not None else config["seeds"]:
                init_args = {**data.init_args, **model.data}
                dataset = {
                    "name": data.name,
                    "class_path": data.class_path,
                    "init_args": _substitute(init_args, seed),
                }
                job_id = safe_name(f"{data.name}-{model.name}-seed{seed}")
                jobs.append(
                    Job(
                        job_id=job_id,
                        dataset=dataset,
                        model=_substitute(asdict(model), seed),
                        seed=int(seed),
                        accelerator=str(config["accelerator"]),
                        job_dir=str(work / "jobs" / job_id),
                        latency_images=int(config["latency_images"]),
                        resume=resume,
                        torch_threads=config["torch_threads"],
                        keep_checkpoints=keep_checkpoints,
                    )
                )
    return jobs
