"""Training FLOPs per token of an HF causal LM, as a function of its depth.

Growth changes the cost of a step, so compute is counted from the current depth rather than
inferred from tokens seen. Framework-free: reads only attributes of a `PretrainedConfig`.

Derivation (per token, one sequence of length T, hidden size h, L layers):

A matmul of an (m, k) activation by a (k, n) weight costs 2*m*k*n FLOPs (one multiply and one
add per term), so each token pays 2 * (fan_in * fan_out) for every weight matrix it passes
through. Per layer, with n_q query heads, n_kv key/value heads and head size d_head:

    q projection            2 * h * (n_q * d_head)
    k and v projections     2 * 2 * h * (n_kv * d_head)      # GQA: only n_kv heads are projected
    o projection            2 * (n_q * d_head) * h
    attention scores QK^T   2 * T * (n_q * d_head)           # one dot of size d_head per key, per head
    attention-weighted V    2 * T * (n_q * d_head)           # same shape, other side
    MLP                     2 * m * h * i                    # m = 3 (gated SwiGLU: gate, up, down)
                                                             #   or 2 (GPT-2 / GPT-NeoX: up, down)

plus once per token the LM head, 2 * h * V. The embedding lookup is a gather: 0 FLOPs.

The attention terms count all T keys for every query, not the ~T/2 a causal mask leaves: the
eager implementation computes the full T x T matrix and masks it afterwards, and that full
matrix is what `torch.utils.flop_counter.FlopCounterMode` counts (also in its SDPA formulas,
which ignore `is_causal`). The same holds under a sliding window (mistral/qwen2): we count T,
not the window. With GQA the keys/values are repeated to n_q heads before the matmuls, so the
attention terms use n_q, not n_kv.

Not counted: norms, activations, softmax, RoPE, residual adds, biases and the loss. They are
elementwise, O(h) or O(T * n_q) per token against O(h^2) for the matmuls, and FlopCounterMode
does not count them either.

Training = forward + backward = 3 x forward: the backward pass of every matmul computes two
matmuls of the same size (gradient with respect to the input and with respect to the weight, or
to both operands for QK^T and attention @ V). This holds for the first layer too, because the
embedding output requires grad. As in nanoGPT's estimate_flops and torchtitan's
get_num_flop_per_token, activation recomputation (gradient checkpointing) is not counted: it
costs wall-clock time but is not useful work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox")
_GATED_MLP_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class _Dims:
    hidden: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    mlp_matrices: int  # 3 for a gated MLP, 2 for up/down
    vocab: int


def _dims(config) -> _Dims:
    # Every family's config answers hidden_size / num_hidden_layers / num_attention_heads (GPT-2's
    # through its attribute_map to n_embd / n_layer / n_head); they differ in the MLP and GQA.
    family = getattr(config, "model_type", None)
    if family not in ("gpt2", "gpt_neox", *_GATED_MLP_FAMILIES):
        raise ValueError(
            f"config.model_type: {family!r} is not supported; supported families are "
            f"{', '.join(SUPPORTED_FAMILIES)}"
        )
    hidden, num_heads = config.hidden_size, config.num_attention_heads
    if family == "gpt2":
        intermediate = config.n_inner if config.n_inner is not None else 4 * hidden
    else:
        intermediate = config.intermediate_size
    gated = family in _GATED_MLP_FAMILIES
    return _Dims(
        hidden=hidden,
        num_layers=config.num_hidden_layers,
        num_heads=num_heads,
        num_kv_heads=(getattr(config, "num_key_value_heads", None) or num_heads) if gated else num_heads,
        # qwen3 (and llama/mistral when set) carry head_dim, which may differ from hidden / heads.
        head_dim=(getattr(config, "head_dim", None) or hidden // num_heads) if gated else hidden // num_heads,
        intermediate=intermediate,
        mlp_matrices=3 if gated else 2,
        vocab=config.vocab_size,
    )


def training_flops_per_token(config, seq_len: int, depth: int | None = None) -> float:
    """Training (forward + backward) FLOPs per token at `depth` layers; see the module docstring.

    `depth` defaults to the config's current layer count. For a schedule's depth-dependent cost,
    `functools.partial(training_flops_per_token, config, seq_len)` is a `depth -> FLOPs` function.
    """
    dims = _dims(config)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len: must be a positive integer, got {seq_len!r}")
    if depth is None:
        depth = dims.num_layers
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth: must be a positive integer, got {depth!r}")

    h = dims.hidden
    q_dim = dims.num_heads * dims.head_dim
    kv_dim = dims.num_kv_heads * dims.head_dim
    projections = 2 * h * q_dim + 2 * 2 * h * kv_dim + 2 * q_dim * h  # q; k and v; o
    attention = 2 * seq_len * q_dim + 2 * seq_len * q_dim  # QK^T, then weights @ V
    mlp = 2 * dims.mlp_matrices * h * dims.intermediate
    lm_head = 2 * h * dims.vocab
    forward = depth * (projections + attention + mlp) + lm_head
    return float(3 * forward)


def model_flops_per_token(model, seq_len: int) -> float:
    """`training_flops_per_token` of `model` at its config's current depth."""
    return training_flops_per_token(model.config, seq_len)


def cumulative_training_flops(step_schedule, step: int, tokens_per_step: int, flops_per_token: Callable[[int], float]) -> float:
    """Training FLOPs spent in the first ``step`` optimizer steps of a run that follows
    ``step_schedule`` (a GrowthSchedule in unit "steps"): each step costs
    ``flops_per_token(depth in force during that step) * tokens_per_step``.

    A pure function of the schedule, so a resumed run reports the same compute as an
    uninterrupted one. The depth in force during step t (0-based) is ``depth_at(t)``: a growth
    at point p happens after p steps and applies from step p on.
    """
    if step_schedule.unit != "steps":
        raise ValueError(f"cumulative_training_flops needs a schedule in steps, got unit {step_schedule.unit!r}")
    bounds = [0] + [int(p) for p, _ in step_schedule.points] + [None]
    depths = [step_schedule.initial_depth] + [d for _, d in step_schedule.points]
    total = 0.0
    for start, end, depth in zip(bounds[:-1], bounds[1:], depths):
        n = max(0, min(step, end if end is not None else step) - start)
        total += n * tokens_per_step * flops_per_token(depth)
    return total
