"""Private APIs of transformers, accelerate and DeepSpeed that growth/ relies on.

These fail loudly, naming the API, when an upgrade changes them (pyproject pins the ranges we
tested: transformers 5.24, accelerate 1.15, deepspeed 0.19.8)."""

import inspect
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _params(fn):
    return list(inspect.signature(fn).parameters)


def test_trainer_internals():
    from transformers import Trainer

    expected = {
        "training_step": ["self", "model", "inputs", "num_items_in_batch"],
        "_clip_grad_norm": ["self", "model"],
        "_get_grad_norm": ["self", "model", "grad_norm"],
        "_prepare_for_training": ["self", "max_steps", "train_dataloader", "resume_from_checkpoint"],
        "set_initial_training_values": ["self", "args", "dataloader"],
    }
    for name, params in expected.items():
        assert hasattr(Trainer, name), f"Trainer.{name} is gone"
        assert _params(getattr(Trainer, name)) == params, f"Trainer.{name} signature changed: {_params(getattr(Trainer, name))}"
    assert _params(Trainer._maybe_log_save_evaluate)[:4] == ["self", "tr_loss", "grad_norm", "model"]
    # Growth runs in on_step_end, which must come after the optimizer step and before log/save/evaluate.
    src = inspect.getsource(Trainer._run_epoch)
    order = [src.index(s) for s in ("self.optimizer.step()", "self.lr_scheduler.step()", "on_step_end", "self._maybe_log_save_evaluate(")]
    assert order == sorted(order), "Trainer._run_epoch changed the order of step / on_step_end / log-save-evaluate"
    for attr in ("self._tr_loss", "self._globalstep_last_logged", "self.model_wrapped = model", "self.callback_handler, attr"):
        assert attr in inspect.getsource(Trainer), f"Trainer no longer has {attr}"


def test_accelerate_internals():
    from accelerate import Accelerator

    src = inspect.getsource(Accelerator)
    for attr in ("self.deepspeed_engine_wrapped", "self._models", "self._optimizers", "self._schedulers"):
        assert attr in src, f"Accelerator.{attr} is gone"
    assert "model" in _params(Accelerator.prepare_model)
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    assert hasattr(DistributedType, "DEEPSPEED") and "_shared_state" in vars(PartialState)


def test_deepspeed_internals():
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer
    from deepspeed.utils import (  # noqa: F401
        safe_get_full_fp32_param,
        safe_get_full_optimizer_state,
        safe_set_full_fp32_param,
        safe_set_full_optimizer_state,
    )

    for name in ("_lazy_init_hp_params_optimizer_state", "update_lp_params"):
        assert hasattr(DeepSpeedZeroOptimizer, name), f"DeepSpeedZeroOptimizer.{name} is gone"
    src12 = inspect.getsource(DeepSpeedZeroOptimizer)
    for attr in ("self._hp_optimizer_states_linked", "self.single_partition_of_fp32_groups"):
        assert attr in src12, f"ZeRO-1/2 optimizer attribute {attr} is gone"
    for name in ("_reassign_or_swap_out_partitioned_parameters", "invalidate_secondary_tensor"):
        assert hasattr(DeepSpeedZeroOptimizer_Stage3, name), f"DeepSpeedZeroOptimizer_Stage3.{name} is gone"
    src3 = inspect.getsource(DeepSpeedZeroOptimizer_Stage3)
    for attr in ("self.fp32_partitioned_groups_flat", "self.fp16_partitioned_groups_flat", "self.persistent_parameters"):
        assert attr in src3, f"ZeRO-3 optimizer attribute {attr} is gone"
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer

    for name in ("_lazy_init_hp_params_optimizer_state", "update_lp_params"):
        assert hasattr(BF16_Optimizer, name), f"BF16_Optimizer.{name} is gone"
    assert "self.fp32_groups_flat_partition" in inspect.getsource(BF16_Optimizer), "BF16_Optimizer partitions renamed"
    engine = inspect.getsource(DeepSpeedEngine)
    for attr in ("self.global_steps", "self.global_samples", "self.micro_steps", "self.skipped_steps", "def destroy"):
        assert attr in engine, f"DeepSpeedEngine {attr} is gone"


def test_deepspeed_local_growth_internals():
    """growth/deepspeed.py's local copies (GROWTH_DISTRIBUTED_COPY=local) and broadcast-free rebuild."""
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.partition_parameters import Init, ZeroParamStatus
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer
    from deepspeed.utils import (  # noqa: F401
        safe_get_local_fp32_param,
        safe_get_local_optimizer_state,
        safe_set_local_fp32_param,
        safe_set_local_optimizer_state,
    )
    from transformers import PreTrainedModel
    from transformers.integrations import deepspeed as hf_ds

    # zero.Init: broadcast from rank 0, then partition; we keep the partition and drop the broadcast
    init = inspect.getsource(Init._zero_init_param)
    assert "_convert_to_deepspeed_param(param)" in init and "dist.broadcast" in init and "param.partition()" in init, \
        "deepspeed Init._zero_init_param changed"
    assert _params(Init._zero_init_param) == ["self", "param"], "Init._zero_init_param signature changed"
    assert hasattr(ZeroParamStatus, "AVAILABLE") and hasattr(ZeroParamStatus, "NOT_AVAILABLE")
    assert _params(DeepSpeedEngine._broadcast_model) == ["self"], "DeepSpeedEngine._broadcast_model changed"
    # the ZeRO-3 optimizer gathers each parameter only to register its grad hook, then partitions it
    hooks = inspect.getsource(DeepSpeedZeroOptimizer_Stage3.create_reduce_and_remove_grad_hooks)
    assert "param.all_gather()" in hooks and "param.partition()" in hooks and "register_grad_hook" in hooks, \
        "DeepSpeedZeroOptimizer_Stage3.create_reduce_and_remove_grad_hooks changed"
    assert "self.fp16_groups" in hooks
    # transformers' gathered ZeRO-3 weight init, looked up at call time by _from_config
    assert callable(hf_ds.initialize_weights_zero3)
    assert "from .integrations.deepspeed import initialize_weights_zero3" in inspect.getsource(PreTrainedModel._from_config), \
        "transformers _from_config no longer imports initialize_weights_zero3 at call time"
    # ZeRO-1/2 and BF16_Optimizer flat layouts: parameters are views into the flat buffers
    for attr in ("self.bit16_groups", "self.bit16_groups_flat"):
        assert attr in inspect.getsource(DeepSpeedZeroOptimizer), f"ZeRO-1/2 optimizer attribute {attr} is gone"
    for attr in ("self.bf16_groups", "self.bf16_groups_flat"):
        assert attr in inspect.getsource(BF16_Optimizer), f"BF16_Optimizer attribute {attr} is gone"


def test_fsdp2_growth_internals():
    """growth/fsdp.py reads a unit's FSDP2 settings from its state and reruns the root's lazy init;
    growth/distributed.py relabels the CPU state so that accelerate takes its FSDP branch; the
    Trainer writes no model file for a sharded state dict (growth/trainer.py gathers the final one)."""
    from accelerate.state import AcceleratorState
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp._fully_shard import _fsdp_param, _fsdp_param_group, _fsdp_state
    from transformers import Trainer

    assert hasattr(FSDPModule, "_get_fsdp_state") and hasattr(FSDPModule, "reshard"), "FSDPModule API changed"
    assert "__mro__" in inspect.getsource(FSDPModule.__new__), "FSDPModule no longer builds its original class"
    state = inspect.getsource(_fsdp_state.FSDPState.__init__)
    for attr in ("self._fsdp_param_groups", "self._is_root", "self._state_ctx", "self._states_to_forward_prefetch",
                 "self._states_to_backward_prefetch", "self._auto_reshard_after_forward"):
        assert attr in state, f"FSDPState.{attr} is gone"
    lazy = inspect.getsource(_fsdp_state.FSDPState._lazy_init)
    assert "if self._is_root is not None" in lazy and "self._state_ctx.all_states.append" in lazy, \
        "FSDPState._lazy_init changed (growth reruns it to add new units)"
    assert "self.all_states" in inspect.getsource(_fsdp_state.FSDPStateContext.__init__)
    group = inspect.getsource(_fsdp_param_group.FSDPParamGroup.__init__)
    for attr in ("self.mesh_info", "self.post_forward_mesh_info", "self.mp_policy", "self.offload_policy",
                 "self._module_fqn"):
        assert attr in group, f"FSDPParamGroup.{attr} is gone"
    assert "Lazy init should be idempotent" in inspect.getsource(_fsdp_param_group.FSDPParamGroup.lazy_init)
    param = inspect.getsource(_fsdp_param.FSDPParam)
    assert "self.fsdp_placement" in param and "self.sharded_param" in param and "def reset_sharded_param" in param
    # accelerate enables FSDP only for device-backed multi-process types (not MULTI_CPU)
    acc = inspect.getsource(AcceleratorState.__init__)
    assert "DistributedType.MULTI_GPU," in acc and "self.distributed_type = DistributedType.FSDP" in acc, \
        "AcceleratorState's FSDP branch changed: revisit growth.distributed.cpu_distributed_shim(fsdp=True)"
    save = inspect.getsource(Trainer.save_model)
    assert 'if "FULL_STATE_DICT" in str(self.accelerator.state.fsdp_plugin.state_dict_type)' in save, \
        "Trainer.save_model's FSDP branch changed (GrowingTrainerMixin.save_model)"


def test_trainer_checkpoint_internals():
    """growth/trainer.py writes checkpoints under output_dir/.staging by overriding _get_output_dir
    around _save_checkpoint, renames them when complete and rotates them itself; the loading of a
    resumed checkpoint must happen before on_train_begin (growth/safety.py writes records there)."""
    from transformers import Trainer
    from transformers.trainer_utils import rotate_checkpoints

    assert _params(Trainer._save_checkpoint) == ["self", "model", "trial"]
    assert _params(Trainer._get_output_dir) == ["self", "trial"]
    src = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(trial=trial)" in src and "rotate_checkpoints(" in src, "Trainer._save_checkpoint changed"
    assert _params(rotate_checkpoints)[:3] == ["output_dir", "save_total_limit", "best_model_checkpoint"]
    loop = inspect.getsource(Trainer._inner_training_loop)
    assert loop.index("self._prepare_for_training(") < loop.index("on_train_begin"), "checkpoint loading moved after on_train_begin"


def test_compile_and_checkpointing_internals():
    """growth/compile.py and the trainer's block settings (compile and checkpointing across growth)."""
    import torch
    from accelerate.utils import DynamoBackend, TorchDynamoPlugin
    from torch import nn
    from transformers.modeling_layers import GradientCheckpointingLayer

    # nn.Module.compile stores the compiled call here, and deepcopy (__getstate__) drops it.
    layer = nn.Linear(2, 2)
    layer.compile(backend="eager")
    assert layer._compiled_call_impl is not None, "nn.Module.compile no longer sets _compiled_call_impl"
    assert "_compiled_call_impl" not in layer.__getstate__(), "nn.Module.__getstate__ keeps _compiled_call_impl now"
    assert hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"), "torch._dynamo.config.fail_on_recompile_limit_hit is gone"
    # accelerate compiles in prepare_model when dynamo_plugin.backend is not NO (switched off around it).
    assert TorchDynamoPlugin(backend="no").backend == DynamoBackend.NO
    from accelerate import Accelerator

    assert "self.state.dynamo_plugin.backend != DynamoBackend.NO" in inspect.getsource(Accelerator.prepare_model)
    # HF checkpointing: per-layer flag and function, read by forward_with_checkpointing.
    src = inspect.getsource(GradientCheckpointingLayer)
    assert "self.gradient_checkpointing" in src and "self._gradient_checkpointing_func(" in src
