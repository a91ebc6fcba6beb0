"""Fake CUDA for the GPU test lane: SimSID on CUDA tensors, under CUDA's autocast rules, without a GPU.

:class:`~torch._subclasses.fake_tensor.FakeTensorMode` gives tensors that carry a device, dtype and
shape but no data: every operator runs its shape/dtype rule on them, so a CPU/CUDA mix raises as on
a GPU, and anything that needs the numbers on the host (``.item()``, ``bool()``, ``int()`` of a
tensor, ``nonzero``) raises too: on a GPU that is a host synchronisation. :func:`cuda_autocast`
switches CUDA autocast on directly (``torch.autocast("cuda")`` disables itself without a GPU), so
the operators see CUDA's own fp16/bf16 casting lists. :class:`OpRecorder` records the dtypes and
memory formats every operator produced, for the "no reduced-precision score" and channels-last checks.

What cannot be faked: the autograd engine needs a CUDA context to run a backward pass, so the lane
checks the graph each loss reaches (:func:`reached_parameters`) instead of running it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REDUCED = (torch.float16, torch.bfloat16)
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def fake_cuda() -> Iterator[FakeTensorMode]:
    """Fake tensors only (a real tensor in an operator raises), created on ``cuda`` by default."""
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    with mode, torch.device("cuda"):
        yield mode


def to_fake_cuda(module: torch.nn.Module, mode: FakeTensorMode) -> torch.nn.Module:
    """Replace every parameter and buffer of ``module`` (built on the CPU) by a fake CUDA copy, in place.

    ``module.to("cuda")`` cannot do it: it swaps tensors, which fake tensors refuse. The memory
    format (channels-last weights) is kept; a Lightning module is told its device.
    """
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                with unset_fake_temporarily():
                    real = param.detach()
                fake = mode.from_tensor(real)
                with mode:
                    fake = fake.to("cuda")
                sub._parameters[name] = torch.nn.Parameter(fake, requires_grad=param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                fake = mode.from_tensor(buffer)
                with mode:
                    sub._buffers[name] = fake.to("cuda")
    for sub in module.modules():
        if hasattr(sub, "_device"):
            sub._device = torch.device("cuda", 0)
    return module


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype) -> Iterator[None]:
    """CUDA autocast at ``dtype``, as Lightning's ``16-mixed``/``bf16-mixed`` enter it around a step."""
    enabled, previous = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled("cuda", enabled)
        torch.set_autocast_dtype("cuda", previous)


@dataclass
class OpRecorder(TorchDispatchMode):
    """Record every operator's name, output dtypes and (for convolutions) input memory format."""

    ops: list[tuple[str, tuple[torch.dtype, ...]]] = field(default_factory=list)
    conv_inputs_channels_last: list[bool] = field(default_factory=list)
    host_copies: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        """Run ``func`` and note what it produced."""
        kwargs = kwargs or {}
        name = str(func.overloadpacket.__name__)
        if name == "convolution":
            x = args[0]
            self.conv_inputs_channels_last.append(
                x.shape[1] == 1 or x.is_contiguous(memory_format=torch.channels_last)
            )
        out = func(*args, **kwargs)
        flat_in, _ = tree_flatten((args, kwargs))
        flat_out, _ = tree_flatten(out)
        devices_in = {t.device.type for t in flat_in if isinstance(t, torch.Tensor)}
        devices_out = {t.device.type for t in flat_out if isinstance(t, torch.Tensor)}
        if "cuda" in devices_in and devices_out == {"cpu"}:
            self.host_copies.append(name)
        self.ops.append((name, tuple(t.dtype for t in flat_out if isinstance(t, torch.Tensor))))
        return out

    def reduced_precision_ops(self) -> list[str]:
        """Operators that produced an fp16/bf16 tensor."""
        return sorted({name for name, dtypes in self.ops if any(d in REDUCED for d in dtypes)})


def reached_parameters(loss: torch.Tensor) -> set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``loss`` reaches, without running it."""
    seen, leaves, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.add(id(node.variable))
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return leaves


@dataclass
class FakeBatch:
    """What SimSID's steps read of anomalib's batch (anomalib's validators refuse fake tensors)."""

    image: torch.Tensor
    gt_label: torch.Tensor | None = None
    image_path: list[str] = field(default_factory=list)
    fields: dict[str, torch.Tensor] = field(default_factory=dict)

    def update(self, **kwargs: torch.Tensor) -> FakeBatch:
        """Store the step's outputs, as ``Batch.update`` does."""
        self.fields.update(kwargs)
        return self
