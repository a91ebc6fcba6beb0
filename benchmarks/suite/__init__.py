"""One command for "is SimSID better than PatchCore and PaDiM on my data, and what does it cost?".

    python -m benchmarks.suite --config benchmarks/configs/zhanglab.yaml [--resume] [--inline]
    python -m benchmarks.suite --config benchmarks/configs/adult_cxr.yaml --data-root adult-cxr-dev=<folder>

Runs every (model, dataset, seed) of the config and writes to ``output_dir``: ``results.csv`` (one
row per job and tested checkpoint), ``scores.csv.gz`` (every test image's raw score), ``summary.md``
(mean ± std over seeds beside the published numbers) and per dataset ``roc_<dataset>.png`` and
``hist_<dataset>.png``; then the shortcut audit (:mod:`benchmarks.audit`: ``audit.md``, its plot and
matched file lists). ``statistic_baselines: {image_size, statistics}`` adds "models" with no training
that score an image by one global statistic (sign chosen on validation), in a block of their own;
``--models statistics`` runs just them.

Why not ``anomalib benchmark``: it cannot set ``max_epochs``, exits 0 when jobs fail, and its grid
search breaks when models take different arguments. This is a plain loop instead; each job does
``seed_everything``, builds model and datamodule from ``class_path``/``init_args``, fits with
``Engine(max_epochs=<model spec>)``, validating at the end of every epoch, and scores the test set
itself: at the last epoch and/or at the best validation AUROC of the same run (``select``). Any
failed job makes the command exit 1.

Metrics are computed here with scikit-learn from the *raw* test scores: anomalib's normalised
``pred_score`` is clipped to [0, 1], which ties the tails and biases AUROC. "F1"/"accuracy" use
anomalib's threshold fitted on the validation split (F1-adaptive, as deployed); the "oracle"
accuracy/F1 use the threshold maximising accuracy on the test set itself, as the SimSID/SQUID
papers report (optimistic, for comparison with published tables only).

Each job runs in a fresh subprocess by default, so peak memory (``ru_maxrss``) is per job and a
crash cannot take the suite down; ``--inline`` runs jobs in this process (faster start, for tests;
peak RSS is then process-wide). Finished jobs are kept under ``work_dir/jobs/<id>/`` and reused by
``--resume``; models with ``checkpoint: true`` also resume mid-training from ``last.ckpt``.
Checkpoints are deleted once scored unless ``--keep-checkpoints`` is given. ``--models SimSID`` runs
one model and keeps the other models' rows already in ``output_dir`` where their settings hash is
unchanged, so a slow model joins a table of fast ones later (on a GPU, or overnight) without
rerunning them. ``--torch-threads`` overrides the config's threads per job (the report gives each
model's).

Modules: ``config`` (schema, jobs), ``jobs`` (one job, in a subprocess or inline), ``metrics``,
``report`` (tables, plots), ``cli`` (the command).
"""

from benchmarks.suite.cli import main
from benchmarks.suite.config import load_config
from benchmarks.suite.metrics import image_metrics, oracle_operating_point

__all__ = ["image_metrics", "load_config", "main", "oracle_operating_point"]
