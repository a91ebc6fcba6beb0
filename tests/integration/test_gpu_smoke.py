"""``benchmarks/gpu_smoke.py --device cpu`` runs every check end to end at tiny sizes (CI runs it)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

CHECKS = (
    "device", "fit 32-true", "fit 16-mixed", "fit bf16-mixed", "all options", "resume",
    "export parity (CUDA hidden)", "scores fp32 under autocast", "paper steps", "throughput 32-true",
    "throughput 32-true CL", "throughput bf16-mixed", "throughput bf16-mixed CL", "throughput image cache",
)  # fmt: skip


def test_gpu_smoke_runs_on_the_cpu(tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu_smoke.py"),
        "--device",
        "cpu",
        "--work",
        str(tmp_path),
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {
        line.split(" | ")[0].strip("| "): line for line in out.stdout.splitlines() if line.startswith("| ")
    }
    for check in CHECKS:
        assert check in rows, f"no row for {check!r}"
        assert "| FAIL |" not in rows[check], rows[check]
    assert "| PASS |" in rows["export parity (CUDA hidden)"]
    assert "| PASS |" in rows["scores fp32 under autocast"]
    assert "| SKIP |" in rows["fit 16-mixed"]  # Lightning's 16-mixed is CUDA only
