"""What SimSID needs from Lightning's data-parallel strategies (``--trainer.strategy ddp``).

* SimSID optimises manually with two backward passes per generator batch: the critic's loss never
  reaches the generator and on critic-only batches the generator has no graph at all. PyTorch DDP
  therefore has to look for unused parameters, otherwise the second backward fails ("parameters that
  were not used in producing the loss"). Lightning registers strategies for exactly that
  (``--trainer.strategy ddp_find_unused_parameters_true``, also ``ddp_spawn_...``/``ddp_fork_...``);
  :func:`require_unused_parameter_detection` refuses any other DDP strategy at the start of fitting
  with a message naming them, instead of failing after the first batch. It also refuses
  ``static_graph=True``: the graph is not static (critic-only batches have no generator graph, and
  generator batches two backward passes), so DDP's recorded schedule would reduce the wrong buckets.
* ``deterministic=True`` cannot run on CUDA: the decoder's bilinear upsampling has no deterministic
  CUDA backward kernel, so PyTorch would stop at the first generator step;
  :func:`refuse_deterministic_cuda` says so before training starts.
* DDP keeps BatchNorm running statistics rank-local between forwards. :func:`broadcast_buffers`
  copies rank 0's buffers (BN statistics; memory queues, already identical through the gathered
  writes) to every rank before validation and at the end of training, so all ranks validate the
  same model and hold the same state, rank 0's, which is also what the checkpoint stores.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import distributed as dist
from torch import nn


def require_unused_parameter_detection(strategy: object) -> None:
    """Raise a clear error for a Lightning DDP strategy that does not find unused parameters.

    Args:
        strategy: the trainer's strategy.
    """
    if not isinstance(strategy, DDPStrategy):
        return
    # Lightning exposes the DDP keyword arguments only through this attribute; it is read, never set.
    kwargs = getattr(strategy, "_ddp_kwargs", {})
    if kwargs.get("static_graph"):
        msg = (
            f"SimSID under DDP cannot use static_graph=True ({type(strategy).__name__}): its graph changes "
            "between critic-only and generator batches (two backward passes); use --trainer.strategy "
            "ddp_find_unused_parameters_true"
        )
        raise ValueError(msg)
    if kwargs.get("find_unused_parameters"):
        return
    msg = (
        f"SimSID under DDP ({type(strategy).__name__} with find_unused_parameters=False) needs DDP to find "
        "unused parameters (its critic and generator backward separately): use --trainer.strategy "
        "ddp_find_unused_parameters_true (or ddp_spawn_find_unused_parameters_true, "
        "ddp_fork_find_unused_parameters_true), or DDPStrategy(find_unused_parameters=True)"
    )
    raise ValueError(msg)


def refuse_deterministic_cuda(device: torch.device) -> None:
    """Raise one clear error for ``deterministic=True`` (strict, not ``"warn"``) on a CUDA device."""
    strict = (
        torch.are_deterministic_algorithms_enabled()
        and not torch.is_deterministic_algorithms_warn_only_enabled()
    )
    if device.type == "cuda" and strict:
        msg = (
            "SimSID cannot train with --trainer.deterministic true on CUDA: the decoder's bilinear "
            "upsampling has no deterministic CUDA backward (PyTorch stops at the first generator step); "
            "use --trainer.deterministic warn (or false)"
        )
        raise ValueError(msg)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``module`` with rank ``src``'s; a no-op outside a process group.

    Args:
        module: whose buffers to overwrite.
        src: the rank to copy from.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_contiguous():
                dist.broadcast(buffer, src)
            else:
                tmp = buffer.contiguous()
                dist.broadcast(tmp, src)
                buffer.copy_(tmp)
