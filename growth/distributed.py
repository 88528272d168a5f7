"""Process-group helpers shared by the training script and the tests (no growth logic here)."""

from __future__ import annotations

import os

import torch


def cpu_distributed_shim(deepspeed: bool) -> bool:
    """Let the Trainer run DeepSpeed across processes on a machine without GPU (tests, CI).

    On CPU, accelerate's PartialState sees no DeepSpeed-capable device and reports one process
    although torch.distributed has several, so every rank would silently train alone. We start
    the process group ourselves (gloo) and mark the shared state as DeepSpeed; the Trainer then
    uses it via ``accelerator_config={"use_configured_state": True}``. Does nothing with a GPU.
    """
    if not deepspeed or torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed as ds
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    ds.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    state = PartialState(cpu=True)
    if state.num_processes != torch.distributed.get_world_size():
        raise RuntimeError(f"accelerate sees {state.num_processes} processes, torch.distributed {torch.distributed.get_world_size()}")
    state.distributed_type = DistributedType.DEEPSPEED
    return True


def full_parameters(trainer):
    """Yield (name, full fp32 tensor) for every parameter of the trainer's model, on every rank.

    Under DeepSpeed the values come from the fp32 master copy (gathered: a collective, so every
    rank must iterate in the same order); otherwise the parameters themselves."""
    engine = trainer.model_wrapped
    if getattr(trainer, "is_deepspeed_enabled", False):
        from deepspeed.utils import safe_get_full_fp32_param

        for name, p in engine.module.named_parameters():
            yield name, safe_get_full_fp32_param(p)
    else:
        yield from trainer.model.named_parameters()
