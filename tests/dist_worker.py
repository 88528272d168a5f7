"""A tiny growth run for the multi-process tests: `accelerate launch ... tests/dist_worker.py OUT [ds_config]`.

Each rank writes OUT/rank{R}.json with its losses, grad norms, growth events and parameter checksums
taken right after each growth and at the end, so the test can compare backends and ranks.
"""

import json
import os
import sys

import datasets
import torch
import transformers

from growth.distributed import cpu_distributed_shim, fsdp_requested
from growth.trainer import enable_growth

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_model  # noqa: E402

out = sys.argv[1]
ds_config = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "none" else None
max_steps = int(os.environ.get("GROWTH_TEST_STEPS", 8))
resume = os.environ.get("GROWTH_TEST_RESUME")
save_steps = int(os.environ.get("GROWTH_TEST_SAVE_STEPS", 0))
stop_at = int(os.environ.get("GROWTH_TEST_STOP_AT", 0))  # simulate an interrupted run
world = int(os.environ.get("WORLD_SIZE", 1))
accum = int(os.environ.get("GROWTH_TEST_ACCUM", 1))  # gradient accumulation steps (same global batch)
# FSDP2 either from the accelerate config (fsdp2.yaml) or from the Trainer's own arguments.
fsdp_args = {"fsdp": "full_shard auto_wrap", "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
                                                             "state_dict_type": "SHARDED_STATE_DICT"}} \
    if os.environ.get("GROWTH_TEST_FSDP_ARGS") == "1" else {}
fsdp = fsdp_requested(fsdp_args)
if os.environ.get("GROWTH_TEST_NO_SHIM") != "1":  # without it, the backend must refuse to run, not fall back
    cpu_distributed_shim(deepspeed=ds_config is not None, fsdp=fsdp)

g = torch.Generator().manual_seed(0)
starts = torch.randint(2, 60, (128, 1), generator=g)
ids = ((starts + torch.arange(16)) % 95 + 2).tolist()
data = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids})

# Built before TrainingArguments, so ZeRO-3's zero.Init does not re-draw the initial weights:
# every backend starts from the same model.
model = tiny_model("llama", layers=2).train()
# Same global batch (8) on 1 or 2 processes.
args = transformers.TrainingArguments(
    out, max_steps=max_steps, per_device_train_batch_size=8 // world // accum, gradient_accumulation_steps=accum, learning_rate=3e-3, logging_steps=1,
    report_to=[], use_cpu=True, disable_tqdm=True, seed=0, lr_scheduler_type="linear", warmup_steps=2,
    save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, deepspeed=ds_config,
    max_grad_norm=1.0, accelerator_config={"use_configured_state": True} if (ds_config or fsdp) and torch.distributed.is_initialized() else None,
    dataloader_drop_last=True, bf16=os.environ.get("GROWTH_TEST_BF16") == "1", **fsdp_args)
trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
enable_growth(trainer, {"schedule": {"initial_depth": 2, "unit": "steps", "points": [[3, 3], [5, 4]]},
                        "operator": os.environ.get("GROWTH_TEST_OPERATOR", "stack_last"),
                        "init": os.environ.get("GROWTH_TEST_INIT", "copy"),
                        "optimizer_state": os.environ.get("GROWTH_TEST_OPTIMIZER_STATE", "copy")})


def checksums(model):
    from growth.distributed import full_parameters

    return {n: float(p.double().sum()) for n, p in full_parameters(trainer)}


snap, sharding, gather_bytes = {}, {}, {}


class Snap(transformers.TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step in (3, 5):
            from growth.comm import count_bytes

            with count_bytes() as c:  # gathering full parameters: the counter must see FSDP's collectives
                snap[state.global_step] = checksums(trainer.model)
            gather_bytes[state.global_step] = c.received
            if trainer.is_fsdp_enabled:  # this rank's parameter elements against the full model's
                sharding[state.global_step] = [sum(p.to_local().numel() for p in trainer.model.parameters()),
                                               sum(p.numel() for p in trainer.model.parameters())]
        if state.global_step == stop_at:
            control.should_training_stop = True


trainer.add_callback(Snap())
comm = []  # bytes this rank sent / received during each growth event (growth/comm.py)
_grow_now = trainer.grow_now


def counted_grow_now(depth):
    from growth.comm import count_bytes

    with count_bytes() as c:
        event = _grow_now(depth)
    comm.append({"sent": c.sent, "received": c.received, "by_phase": c.by_phase()})
    return event


trainer.grow_now = counted_grow_now
trainer.train(resume_from_checkpoint=resume)
result = {
    "loss": {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h},
    "grad_norm": {h["step"]: h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h},
    "snap": snap, "final": checksums(trainer.model), "depth": trainer.model.config.num_hidden_layers,
    "global_step": trainer.state.global_step,
    "ds_global_steps": getattr(trainer.model_wrapped, "global_steps", None),
    # ZeRO-3: the grown model was created partitioned (each rank holds a slice of every parameter).
    "partitioned": [bool(hasattr(p, "ds_id") and p.ds_tensor.numel() < p.ds_numel) for p in trainer.model.parameters()],
    "in_engine": trainer.is_deepspeed_enabled and trainer.model_wrapped.module is trainer.model,
    "fsdp": trainer.is_fsdp_enabled, "sharding": sharding, "comm": comm, "gather_bytes": gather_bytes,
    "mp_param_dtypes": sorted({str(u._get_fsdp_state()._mp_policy.param_dtype) for u in trainer.model.modules()
                               if hasattr(u, "_get_fsdp_state")}),
}
rank = int(os.environ.get("RANK", 0))
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
trainer.accelerator.free_memory()
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
