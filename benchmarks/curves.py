"""Learning curves: train SimSID from a package config and record every score's AUROC as it trains.

    python -m benchmarks.curves --config configs/zhanglab.yaml --root <dataset root> \
        --epochs 30 --every 2 --out benchmarks/work/curves/zhanglab [--precision bf16-mixed] \
        [--channels-last] [--threads 2] [--seed 0] [--model-args '{"lr": 1e-3}']

Writes under ``--out``: ``curves.csv`` (``epoch, score, split, auroc, ...`` via
:class:`~anomalib_simsid.models.simsid.adapters.score_curves.ScoreCurves`),
``per_image.csv`` (every image's scores at every
evaluation, for diagnosis), ``checkpoints/last.ckpt`` (every epoch; rerunning the same command
resumes from it) and ``checkpoints/epoch=*.ckpt`` every ``--keep-every`` epochs. Plot with
``python -m benchmarks.plot_curves``. Test AUROC is only drawn, never used to choose anything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import CSVLogger

from benchmarks.common import instantiate


def _build(section: dict[str, Any], overrides: dict[str, Any]) -> Any:
    return instantiate(
        {"class_path": section["class_path"], "init_args": {**section.get("init_args", {}), **overrides}}
    )


def main(argv: list[str] | None = None) -> int:
    """Train with the curve callback; resumable."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="package config, e.g. configs/zhanglab.yaml")
    parser.add_argument("--root", required=True, help="dataset root (data.init_args.root)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--every", type=int, default=2, help="evaluate every n epochs")
    parser.add_argument("--keep-every", type=int, default=10, help="keep a checkpoint every n epochs")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=None, help="default: the config's seed_everything")
    parser.add_argument("--model-args", default="{}", help="JSON overrides of model.init_args")
    parser.add_argument(
        "--model-class",
        default=None,
        help="model class_path replacing the config's (benchmarks.research.simsid_options.SimSIDResearch)",
    )
    parser.add_argument("--data-args", default="{}", help="JSON overrides of data.init_args")
    args = parser.parse_args(argv)

    from anomalib.callbacks.checkpoint import ModelCheckpoint  # anomalib's, so Engine adds none of its own
    from anomalib.engine import Engine

    import anomalib_simsid  # noqa: F401  (registers the plugin)
    from anomalib_simsid.models.simsid.adapters.score_curves import ScoreCurves

    if args.threads:
        torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    seed = args.seed if args.seed is not None else int(config.get("seed_everything", 0))
    seed_everything(seed, workers=True)
    model_args = json.loads(args.model_args)
    if args.channels_last:
        model_args["channels_last"] = True
    model_section = {**config["model"], **({"class_path": args.model_class} if args.model_class else {})}
    model = _build(model_section, model_args)
    datamodule = _build(config["data"], {"root": args.root, **json.loads(args.data_args)})

    out: Path = args.out
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    callbacks = [
        ScoreCurves(out / "curves.csv", every_n_epochs=args.every, per_image_path=out / "per_image.csv"),
        # No monitor + save_top_k=1: the newest epoch replaces last.ckpt (save_last needs a saved top-k).
        # Saved at the end of every training epoch: by default Lightning saves after validation only,
        # which runs every `--every` epochs.
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        ),
    ]
    if args.keep_every > 1:  # (a second checkpoint callback needs another period to be resumable)
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="{epoch}",
                save_top_k=-1,
                every_n_epochs=args.keep_every,
                save_on_train_epoch_end=True,
            )
        )
    engine = Engine(
        max_epochs=args.epochs,
        precision=args.precision,
        callbacks=callbacks,
        default_root_dir=out,
        logger=CSVLogger(out, name="logs"),
        check_val_every_n_epoch=args.every,
        num_sanity_val_steps=0,
        enable_checkpointing=True,
    )
    (out / "run.json").parent.mkdir(parents=True, exist_ok=True)
    info = {
        "config": args.config,
        "seed": seed,
        "epochs": args.epochs,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "threads": torch.get_num_threads(),
        "model_class": model_section["class_path"],
        "model_args": model_args,
        "resumed_from": str(last) if last.is_file() else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "run.json").write_text(json.dumps(info, indent=2))
    engine.fit(model, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
