"""Process-group helpers shared by the training script and the tests (no growth logic here)."""

from __future__ import annotations

import os

import torch


def fsdp_requested(training_kwargs: dict | None = None) -> bool:
    """FSDP asked for by the launcher (an accelerate config with ``distributed_type: FSDP``) or by
    the Trainer's own ``fsdp`` argument."""
    return (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
            or bool((training_kwargs or {}).get("fsdp")))


def cpu_distributed_shim(deepspeed: bool, fsdp: bool = False) -> bool:
    """Let the Trainer run DeepSpeed or FSDP across processes on a machine without GPU (tests, CI).

    On CPU, accelerate's PartialState sees no DeepSpeed-capable device and reports one process
    although torch.distributed has several, so every rank would silently train alone. We start
    the process group ourselves (gloo) and mark the shared state as DeepSpeed; the Trainer then
    uses it via ``accelerator_config={"use_configured_state": True}``. Does nothing with a GPU.

    FSDP on CPU has the same kind of trap: PartialState says MULTI_CPU, and AcceleratorState takes
    its FSDP branch only for device types (MULTI_GPU, ...), so the FSDP plugin is dropped and the
    Trainer silently trains plain DDP (checkpoints: model.safetensors + optimizer.pt). With
    ``fsdp`` the gloo state is labelled MULTI_GPU; the Trainer's Accelerator then turns it into
    FSDP (device stays cpu, fully_shard's mesh is a cpu/gloo mesh).
    """
    if fsdp and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) >= 2:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        state = PartialState(cpu=True)
        if state.num_processes != torch.distributed.get_world_size():
            raise RuntimeError(f"accelerate sees {state.num_processes} processes, torch.distributed {torch.distributed.get_world_size()}")
        state.distributed_type = DistributedType.MULTI_GPU
        return True
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

    Under DeepSpeed the values come from the fp32 master copy, under FSDP2 from the DTensor shards
    (gathered: a collective, so every rank must iterate in the same order); otherwise the
    parameters themselves."""
    engine = trainer.model_wrapped
    if getattr(trainer, "is_fsdp_enabled", False):
        from torch.distributed.tensor import DTensor

        for name, p in trainer.model.named_parameters():  # FSDP2: all-gather each DTensor
            yield name, p.full_tensor() if isinstance(p, DTensor) else p
    elif getattr(trainer, "is_deepspeed_enabled", False):
        from deepspeed.utils import safe_get_full_fp32_param

        for name, p in engine.module.named_parameters():
            yield name, safe_get_full_fp32_param(p)
    else:
        yield from trainer.model.named_parameters()
