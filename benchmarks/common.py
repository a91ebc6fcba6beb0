"""Helpers shared by the benchmark scripts: CPU info, workers, raw scores; re-exports of package helpers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from anomalib_simsid.audit.report import safe_name, write_text_atomic  # noqa: F401 (the suite imports them here)
from anomalib_simsid.fixes.benchmark import build as instantiate  # noqa: F401 (the one class-path builder)

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def _cpuinfo(key: str) -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == key), "")


def cpu_info(flags: bool = False) -> str:
    """CPU model and core count; with ``flags``, the ISA flags that decide OpenVINO's precision choices."""
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    text = f"{name} ({os.cpu_count()} cores)"
    if flags:
        present = [f for f in CPU_FLAGS if f in _cpuinfo("flags").split()]
        text += f"; {', '.join(present) or 'no AVX-512'}"
    return text


def device_name(accelerator: str) -> str:
    """Name the GPU when ``accelerator`` uses one that is present, else :func:`cpu_info`."""
    if accelerator in {"gpu", "cuda"}:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    return cpu_info()


def run_module(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    capture: bool = False,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m module *args`` in a fresh process (its own peak RSS; a crash stays its own).

    ``cwd`` defaults to this process's working directory (relative paths keep their meaning); ``env``
    to this process's environment; the repository root is put first on ``PYTHONPATH``
    so ``benchmarks`` imports. A timeout becomes ``RuntimeError`` (the child is killed first).
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-m", module, *args]
    try:
        return subprocess.run(
            command, cwd=cwd, env=env, timeout=timeout_s, capture_output=capture, text=True, check=False
        )
    except subprocess.TimeoutExpired as err:
        msg = f"timed out after {timeout_s} s: {' '.join(command)}"
        raise RuntimeError(msg) from err


def iter_outputs(model: Any, loader: Any, device: Any = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(batch, output)`` of the raw torch model after the pre-processor, as anomalib's test step.

    Raw outputs, not ``pred_score`` after post-processing: anomalib's normalised score is clipped to
    [0, 1], which ties the tails and biases AUROC.
    """
    import torch

    transform = getattr(model.pre_processor, "transform", None) if model.pre_processor else None
    with torch.inference_mode():
        for batch in loader:
            image = batch.image if device is None else batch.image.to(device)
            if transform is not None:
                image = transform(image)
            yield batch, model.model(image)
