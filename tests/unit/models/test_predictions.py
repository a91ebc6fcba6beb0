"""The one predictions writer: columns, atomic write, every DDP rank's rows, race-free run folders."""

from __future__ import annotations

import csv
import os
import socket
import threading
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from anomalib_simsid.fixes.engine import new_run_dir
from anomalib_simsid.models.simsid.adapters.predictions import (
    COLUMNS,
    folder_ground_truth,
    gather_rows,
    prediction_row,
    write_predictions,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_rows_name_their_ground_truth_from_class_folders(tmp_path: Path) -> None:
    assert folder_ground_truth("x/test/PNEUMONIA/a.png") == "anomalous"
    assert folder_ground_truth("x/NORMAL/sub/a.png") == "normal"
    assert folder_ground_truth("x/a.png") == ""
    path = write_predictions(
        tmp_path / "p.csv",
        [prediction_row("d/normal/a.png", 0.1234567, "normal"), prediction_row("b.png", 0.9, "", "")],
        leading=("epoch",),
    )
    rows = _rows(path)
    assert tuple(rows[0]) == ("epoch", *COLUMNS)
    assert rows[0]["ground_truth"] == "normal"
    assert rows[0]["score"] == "0.123457"
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]  # no temporary file left


def _gather(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        rows = gather_rows([prediction_row(f"rank{rank}_{i}.png", i / 10) for i in range(rank + 1)])
        if rank == 0:
            write_predictions(out, rows)
    finally:
        dist.destroy_process_group()


def test_ddp_writes_every_ranks_rows(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "predictions.csv"
    mp.spawn(_gather, args=(port, str(out)), nprocs=2, join=True)
    assert [row["image_path"] for row in _rows(out)] == ["rank0_0.png", "rank1_0.png", "rank1_1.png"]


def test_concurrent_runs_get_their_own_folders(tmp_path: Path) -> None:
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_run_dir(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in made) == sorted(f"v{i}" for i in range(8))
    assert (tmp_path / "latest").resolve() in made
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary link left
    assert os.path.islink(tmp_path / "latest")
