"""What SimSID needs from Lightning's data-parallel strategies (``--trainer.strategy ddp``).

* SimSID optimises manually with two backward passes per generator batch: the critic's loss never
  reaches the generator and on critic-only batches the generator has no graph at all. PyTorch DDP
  therefore has to look for unused parameters, otherwise the second backward fails ("parameters that
  were not used in producing the loss"). :func:`find_unused_parameters` switches it on for any
  Lightning DDP strategy (``ddp``, ``ddp_spawn``, ``ddp_fork``...) before the model is wrapped.
* DDP keeps BatchNorm running statistics rank-local between forwards. :func:`broadcast_buffers`
  copies rank 0's buffers (BN statistics; memory queues, already identical through the gathered
  writes) to every rank before validation and at the end of training, so all ranks validate the
  same model and hold the same state, rank 0's, which is also what the checkpoint stores.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import distributed as dist
from torch import nn


def find_unused_parameters(strategy: object) -> bool:
    """Enable DDP's unused-parameter detection on a Lightning DDP strategy; return whether it changed."""
    if not isinstance(strategy, DDPStrategy):
        return False
    kwargs = getattr(strategy, "_ddp_kwargs", None)
    if not isinstance(kwargs, dict) or kwargs.get("find_unused_parameters") or kwargs.get("static_graph"):
        return False
    kwargs["find_unused_parameters"] = True
    rank_zero_info("SimSID: DDP find_unused_parameters=True (critic and generator backward separately)")
    return True


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``module`` with rank ``src``'s; a no-op outside a process group."""
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
