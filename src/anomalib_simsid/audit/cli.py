"""``simsid-audit``: is a model seeing the disease or the scanner? The shortcut audit of any model's scores.

    simsid-audit IMAGES --scores predictions.csv [--labels labels.csv] [--metadata sites.csv] [--out DIR]

``IMAGES`` is a folder of images (PNG/JPEG, 16-bit, DICOM with or without suffix), labelled by
subfolder names (``normal``/``abnormal`` and the like, any depth) or by ``--labels`` (a CSV of image
path and ``label``: 0/1 or normal/abnormal). ``--scores`` is any CSV with an image path column
(``image_path``, ``file``, ``image`` or ``path``) and a ``score`` column (higher = abnormal): the
``predictions.csv`` of ``anomalib predict``, ``simsid-score``'s ``scores.csv``, or one from any tool.
Paths may be absolute, relative to ``IMAGES`` or to the working folder, or end with a path relative
to ``IMAGES`` (scores written on another machine).

It writes ``audit.md``, ``audit.json``, ``audit.png`` and the matched pairs (``matched_<statistic>.csv``)
into ``--out``, all or nothing: test AUROC with a bootstrap CI, the AUROC on pairs matched on
sharpness and on mean intensity, each statistic's AUROC alone, and, for DICOM files (their
acquisition tags) or a ``--metadata`` CSV (e.g. ``site``), each attribute's AUROC alone and the model's
AUROC within each of its groups. Bad input stops with one line naming the file and what was expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from anomalib_simsid.audit.core import MATCH_STATISTICS, audit_rows, pairs_table
from anomalib_simsid.audit.matching import CALIPER_SD, DRAWS, MIN_PAIRS, SEED, auroc_ci
from anomalib_simsid.audit.metadata import DICOM_TAGS, audit_attributes, dicom_tags
from anomalib_simsid.audit.report import PREFIX, plot_audit, user_report, write_text_atomic
from anomalib_simsid.audit.statistics import AUDIT_SIZE, BASELINE_STATISTICS, label, path_statistics
from anomalib_simsid.data.image_io import ImageReadError, image_files, is_dicom

PATH_COLUMNS = ("image_path", "file", "image", "path", "filename")
SCORE_COLUMNS = ("score", "pred_score", "anomaly_score")
LABEL_COLUMNS = ("label", "ground_truth", "gt_label")
NORMAL_NAMES = frozenset({"normal", "good", "healthy", "negative", "no_finding", "nofinding"})
ABNORMAL_NAMES = frozenset(
    {"abnormal", "anomaly", "anomalous", "bad", "positive", "disease", "pneumonia", "defect", "lesion"}
)
MIN_PER_CLASS = 2  # images of each class the audit needs (an AUROC over one image per class says nothing)


class AuditInputError(ValueError):
    """Input the audit cannot use; the message names the file and what was expected."""


def _column(frame: pd.DataFrame, names: Sequence[str], where: Path, what: str) -> str:
    found = next((c for c in names if c in frame.columns), None)
    if found is None:
        msg = f"{where}: no {what} column; expected one of {list(names)}, found {list(frame.columns)}"
        raise AuditInputError(msg)
    return found


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        msg = f"{path}: {what} file not found"
        raise AuditInputError(msg)
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot read the {what} CSV ({type(err).__name__}: {err})"
        raise AuditInputError(msg) from err


class ImageIndex:
    """The images under a folder, found by the package listing, and a resolver for paths written elsewhere."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            msg = f"{root}: not a folder; expected a folder of images (subfolders normal/ and abnormal/)"
            raise AuditInputError(msg)
        self.root = root
        self.files = image_files(root)
        if not self.files:
            msg = f"{root}: no images found; expected PNG/JPEG/DICOM files (DICOM also without suffix)"
            raise AuditInputError(msg)
        self.by_relative = {f.relative_to(root).as_posix(): f for f in self.files}
        self.by_absolute = {str(f.resolve()): f for f in self.files}

    def relative(self, path: Path) -> str:
        """Return the path of an indexed file relative to the folder (the report's image names)."""
        return path.relative_to(self.root).as_posix()

    def find(self, written: str) -> Path | None:
        """Return the indexed file a CSV's path names, or ``None``."""
        path = Path(str(written))
        for candidate in (path, self.root / path, Path.cwd() / path):
            hit = self.by_absolute.get(str(candidate.resolve())) if candidate.is_absolute() else None
            if hit is not None:
                return hit
        parts = path.parts
        for start in range(len(parts)):  # a path that ends with one relative to the folder
            hit = self.by_relative.get("/".join(parts[start:]))
            if hit is not None:
                return hit
        return None

    def resolve(self, written: Iterable[str], where: Path, what: str) -> list[Path]:
        """Find every path of a CSV column; one error lists those not among the images."""
        written = [str(w) for w in written]
        found = [self.find(w) for w in written]
        missing = [w for w, f in zip(written, found, strict=True) if f is None]
        if missing:
            msg = (
                f"{where}: {len(missing)} of {len(written)} {what} path(s) name no image under {self.root}, "
                f"e.g. {missing[:3]}; expected paths of images in that folder (absolute, or relative to it)"
            )
            raise AuditInputError(msg)
        return found  # type: ignore[return-value]


def _label_value(value: object) -> int | None:
    text = str(value).strip().lower()
    if text in {"0", "0.0", "false"} or text in NORMAL_NAMES:
        return 0
    if text in {"1", "1.0", "true"} or text in ABNORMAL_NAMES:
        return 1
    return None


def folder_labels(
    index: ImageIndex, files: Sequence[Path], normal: set[str], abnormal: set[str]
) -> list[int]:
    """Label each file by its nearest parent folder named like a class (``normal``/``abnormal``...)."""
    labels, unlabelled = [], []
    for file in files:
        found = None
        for part in reversed(Path(index.relative(file)).parts[:-1]):
            if part.lower() in normal or part.lower() in abnormal:
                found = 0 if part.lower() in normal else 1
                break
        labels.append(found)
        if found is None:
            unlabelled.append(index.relative(file))
    if unlabelled:
        msg = (
            f"{index.root}: {len(unlabelled)} scored image(s) under no class folder, e.g. {unlabelled[:3]}; "
            f"expected subfolders named one of {sorted(normal)} or {sorted(abnormal)}, or --labels CSV"
        )
        raise AuditInputError(msg)
    return labels  # type: ignore[return-value]


def csv_labels(index: ImageIndex, files: Sequence[Path], path: Path) -> list[int]:
    """Label each file from a CSV of image path and label (0/1 or normal/abnormal names)."""
    frame = _read_csv(path, "labels")
    column = _column(frame, LABEL_COLUMNS, path, "label")
    paths = index.resolve(frame[_column(frame, PATH_COLUMNS, path, "image path")], path, "labels")
    values = [_label_value(v) for v in frame[column]]
    bad = [str(v) for v, parsed in zip(frame[column], values, strict=True) if parsed is None]
    if bad:
        msg = f"{path}: {len(bad)} label(s) not 0/1 or normal/abnormal, e.g. {bad[:3]}"
        raise AuditInputError(msg)
    by_file = dict(zip(paths, values, strict=True))
    missing = [index.relative(f) for f in files if f not in by_file]
    if missing:
        msg = f"{path}: no label for {len(missing)} scored image(s), e.g. {missing[:3]}"
        raise AuditInputError(msg)
    return [by_file[f] for f in files]


def read_scores(index: ImageIndex, path: Path) -> pd.DataFrame:
    """Columns ``file`` (indexed path) and ``score`` of a scores CSV, checked (found, unique, finite)."""
    frame = _read_csv(path, "scores")
    column = _column(frame, SCORE_COLUMNS, path, "score")
    files = index.resolve(frame[_column(frame, PATH_COLUMNS, path, "image path")], path, "scores")
    scores = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(scores).all():
        msg = f"{path}: {int((~np.isfinite(scores)).sum())} score(s) are not finite numbers"
        raise AuditInputError(msg)
    table = pd.DataFrame({"file": files, "score": scores})
    twice = table.file[table.file.duplicated()]
    if len(twice):
        msg = f"{path}: {len(twice)} image(s) scored twice, e.g. {[index.relative(f) for f in twice[:3]]}"
        raise AuditInputError(msg)
    return table


def _statistic_scores(images: pd.DataFrame) -> list[pd.DataFrame]:
    """Rows of the statistic baselines: each statistic, signed so abnormal ranks higher on these images."""
    rows = []
    for statistic in BASELINE_STATISTICS:
        values = images[statistic].to_numpy(dtype=np.float64)
        sign = 1.0 if auroc_ci(images.label, values, draws=0).value >= 0.5 else -1.0
        rows.append(images[["image", "label"]].assign(model=PREFIX + label(statistic), score=sign * values))
    return rows


def run(args: argparse.Namespace, command: str) -> Path:
    """Check every input, compute the audit, then write all outputs into ``args.out`` at once."""
    index = ImageIndex(args.images)
    scores = read_scores(index, args.scores)
    files = list(scores.file)
    if args.labels is not None:
        labels = csv_labels(index, files, args.labels)
    else:
        normal = NORMAL_NAMES | {n.lower() for n in args.normal_name}
        abnormal = ABNORMAL_NAMES | {n.lower() for n in args.abnormal_name}
        labels = folder_labels(index, files, normal, abnormal)
    scores = scores.assign(image=[index.relative(f) for f in files], label=labels)
    for value, name in ((0, "normal"), (1, "abnormal")):
        count = int((scores.label == value).sum())
        if count < MIN_PER_CLASS:
            msg = (
                f"{args.scores}: {count} {name} image(s) scored; the audit needs at least {MIN_PER_CLASS} "
                "of each class"
            )
            raise AuditInputError(msg)
    scores = scores.sort_values("image", kind="stable").reset_index(drop=True)
    stats = path_statistics(list(scores.file), args.image_size)
    images = pd.concat([scores[["image", "label"]], stats], axis=1)
    pairs = {s: pairs_table(images, s, args.caliper) for s in MATCH_STATISTICS}
    notes = [
        f"only {len(p)} {label(s)}-matched pair(s) within the caliper (at least {args.min_pairs} needed): "
        f"no {label(s)}-matched AUROC"
        for s, p in pairs.items()
        if len(p) < args.min_pairs
    ]
    table = pd.concat(
        [scores[["image", "label", "score"]].assign(model=args.name), *_statistic_scores(images)]
    ).assign(seed=0)
    rows = audit_rows(table, images, pairs, args.draws, args.seed, args.min_pairs)

    metadata = []
    dicoms = [f for f in scores.file if is_dicom(f)]
    if dicoms and not args.no_dicom_tags:
        tags = dicom_tags(scores.file.where(scores.file.map(is_dicom)).dropna().tolist())
        if tags.notna().to_numpy().any():
            full = pd.DataFrame(index=range(len(scores)), columns=list(DICOM_TAGS))
            full.loc[scores.file.map(is_dicom).to_numpy(), :] = tags.to_numpy()
            found = metadata_checked(full, scores, "DICOM tags", args)
            metadata += found
            if not found:
                notes.append("no DICOM acquisition tag varies across the scored images: nothing to compare")
        else:
            notes.append(f"the DICOM files carry none of the acquisition tags {list(DICOM_TAGS)}")
    if args.metadata is not None:
        frame = _read_csv(args.metadata, "metadata")
        column = _column(frame, PATH_COLUMNS, args.metadata, "image path")
        paths = index.resolve(frame[column], args.metadata, "metadata")
        frame = frame.drop(columns=[column]).assign(_file=paths).drop_duplicates("_file").set_index("_file")
        found = metadata_checked(
            frame.reindex(scores.file).reset_index(drop=True), scores, args.metadata.name, args
        )
        metadata += found
        if not found:
            notes.append(f"no column of {args.metadata.name} varies across the scored images")
    for note in notes:
        print(f"simsid-audit: note: {note}", file=sys.stderr, flush=True)

    settings = {
        "command": command,
        "image_size": args.image_size,
        "caliper_sd": args.caliper,
        "draws": args.draws,
        "seed": args.seed,
        "min_pairs": args.min_pairs,
    }
    markdown, payload = user_report(args.name, rows, images, pairs, metadata, notes, settings)
    return _write_all(args.out, markdown, payload, rows, pairs)


def metadata_checked(
    table: pd.DataFrame, scores: pd.DataFrame, source: str, args: argparse.Namespace
) -> list:
    """Audit the attributes of ``table`` (one row per scored image, in order)."""
    return audit_attributes(
        table, scores.label.to_numpy(), scores.score.to_numpy(), source, args.draws, args.seed
    )


def _write_all(out: Path, markdown: str, payload: dict, rows: pd.DataFrame, pairs: dict) -> Path:
    """Write every output into a staging folder, then move them into ``out``: all files or none."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".simsid-audit-", dir=out))
    try:
        write_text_atomic(staging / "audit.md", markdown)
        write_text_atomic(staging / "audit.json", json.dumps(payload, indent=2, default=str) + "\n")
        plot_audit(rows, payload["model"], staging / "audit.png")
        for statistic, matched in pairs.items():
            write_text_atomic(
                staging / f"matched_{statistic}.csv", matched.to_csv(index=False, float_format="%.6g")
            )
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "audit.md"


def parser() -> argparse.ArgumentParser:
    """Build the command's argument parser."""
    p = argparse.ArgumentParser(
        prog="simsid-audit",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="See docs/audit.md of anomalib-simsid for what each figure means and what to do with it.",
    )
    p.add_argument(
        "images", type=Path, help="folder of the scored images (labels from normal/abnormal subfolders)"
    )
    p.add_argument(
        "--scores", type=Path, required=True, help="CSV with image_path (or file) and score columns"
    )
    p.add_argument("--labels", type=Path, help="CSV with image_path and label (0/1 or normal/abnormal)")
    p.add_argument("--metadata", type=Path, help="CSV with image_path and attribute columns (e.g. site)")
    p.add_argument("--out", type=Path, help="output folder (default: audit/ beside --scores)")
    p.add_argument("--name", default="model", help="the model's name in the report (default: model)")
    p.add_argument("--normal-name", action="append", default=[], help="another folder name meaning normal")
    p.add_argument(
        "--abnormal-name", action="append", default=[], help="another folder name meaning abnormal"
    )
    p.add_argument("--image-size", type=int, default=AUDIT_SIZE, help="size the statistics are taken at (px)")
    p.add_argument("--caliper", type=float, default=CALIPER_SD, help="largest pair difference (SD)")
    p.add_argument("--min-pairs", type=int, default=MIN_PAIRS, help="fewest matched pairs for an AUROC")
    p.add_argument("--draws", type=int, default=DRAWS, help="bootstrap draws")
    p.add_argument("--seed", type=int, default=SEED, help="bootstrap seed")
    p.add_argument("--no-dicom-tags", action="store_true", help="skip the DICOM acquisition-tag audit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``simsid-audit``; bad input prints one line and returns 2, writing nothing."""
    args = parser().parse_args(argv)
    args.out = args.out if args.out is not None else args.scores.parent / "audit"
    command = "simsid-audit " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        path = run(args, command)
    except (AuditInputError, ImageReadError) as err:
        print(f"simsid-audit: error: {err}", file=sys.stderr, flush=True)
        return 2
    print(path.read_text(), flush=True)
    print(f"wrote {path}, audit.json, audit.png and matched_*.csv in {path.parent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
