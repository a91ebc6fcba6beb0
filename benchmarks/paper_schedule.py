"""The paper's ZhangLab schedule in one command: 1,000 epochs, curves, shortcut audit; resumable.

    make paper-schedule ZHANGLAB=<folder holding chest_xray/> [VAL_EVERY=10] [PRECISION=32-true]
    python -m benchmarks.paper_schedule --root <folder> [--val-every 10] [--precision 32-true] [--out DIR]

It runs ``anomalib fit`` with the shipped ``configs/zhanglab.yaml`` (the paper model, memory queue,
1,000 epochs, the paper's validation protocol) on the first GPU (else the CPU), with:

* validation every ``--val-every`` epochs (and the best-validation-AUROC checkpoint among those);
* ``ScoreCurves`` on validation and test every ``--val-every`` epochs (``curves.csv``,
  ``per_image.csv``);
* the uint8 image cache (``image_cache: memory``) and ``--workers`` loader workers;
* resuming: run the same command again after an interruption and it continues from the newest
  ``last.ckpt`` under ``--out`` (same RNG streams, same folders). With validation every N epochs
  Lightning writes ``last.ckpt`` after each validation, so an interruption loses at most N epochs;
* at the end, the shortcut audit of the last evaluation's test scores (``audit.md``): test AUROC and
  the AUROC on test pairs of equal sharpness, each with a bootstrap 95 % CI.

Projected time: the training steps take ``1,000 x 1,284 images / throughput``; ``python
benchmarks/gpu_smoke.py`` prints that throughput and projection for the card it runs on. Measured
on our shared 2-core CPU (1 thread): see ``docs/gpu.md``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.common import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "zhanglab.yaml"
SCORE = "critic_recon"  # the paper's score, as ScoreCurves names it


def newest_last_checkpoint(out: Path) -> Path | None:
    """Return the ``last.ckpt`` written most recently under ``out``, to resume from."""
    found = sorted(out.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def fit_command(args: argparse.Namespace) -> list[str]:
    """Build the ``anomalib fit`` command line of the schedule (resuming from a ``last.ckpt``)."""
    anomalib = shutil.which("anomalib") or str(Path(sys.executable).parent / "anomalib")
    out = Path(args.out)
    command = [
        anomalib, "fit", "--model", "SimSID", "--config", str(CONFIG),
        "--data.root", args.root, "--default_root_dir", str(out),
        "--data.image_cache", "memory", "--data.num_workers", str(args.workers),
        "--trainer.accelerator", args.accelerator, "--trainer.devices", "1",
        "--trainer.precision", args.precision, "--trainer.max_epochs", str(args.epochs),
        "--trainer.check_val_every_n_epoch", str(args.val_every),
        "--trainer.callbacks+=anomalib_simsid.models.simsid.adapters.score_curves.ScoreCurves",
        "--trainer.callbacks.path", str(out / "curves.csv"),
        "--trainer.callbacks.every_n_epochs", str(args.val_every),
        "--trainer.callbacks.per_image_path", str(out / "per_image.csv"),
    ]  # fmt: skip
    last = newest_last_checkpoint(out)
    if last is not None:
        command += ["--ckpt_path", str(last)]
    return command


def audit(out: Path, root: str) -> str:
    """Audit the last evaluation's test scores (paper score); write and return ``audit.md``."""
    from anomalib_simsid.audit import auroc_ci, matched_auroc

    table = pd.read_csv(out / "per_image.csv")
    last = table[(table.epoch == table.epoch.max()) & (table.split == "test")]
    frame = last.rename(columns={SCORE: "score"})[["image_path", "label", "score"]]
    plain = auroc_ci(frame.label.to_numpy(), frame.score.to_numpy())
    matched = matched_auroc(frame, root=root, statistic="sharpness").auroc
    text = (
        f"# Paper schedule: shortcut audit after epoch {int(last.epoch.max())}\n\n"
        f"Score: `{SCORE}` (the paper's), {len(frame)} test images.\n\n"
        f"- test AUROC: {100 * plain.value:.1f} (95 % CI {100 * plain.low:.1f}-{100 * plain.high:.1f})\n"
        f"- sharpness-matched AUROC: {100 * matched.value:.1f} (95 % CI {100 * matched.low:.1f}-"
        f"{100 * matched.high:.1f}, {matched.n} pairs)\n"
    )
    write_text_atomic(out / "audit.md", text)  # a stopped run never leaves half a report
    return text


def main() -> None:
    """Run (or resume) the schedule, then the audit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="ZhangLab folder (holds chest_xray/)")
    parser.add_argument("--out", default="results/paper-schedule")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--val-every", type=int, default=10)
    parser.add_argument("--precision", default="32-true", help="32-true (the paper) or bf16-mixed / 16-mixed")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--dry-run", action="store_true", help="print the fit command and stop")
    args = parser.parse_args()
    command = fit_command(args)
    print(" ".join(command), flush=True)
    if args.dry_run:
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True)
    print(audit(Path(args.out), args.root))


if __name__ == "__main__":
    main()
