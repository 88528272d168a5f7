"""Model-family adapters: the only place that knows where a family keeps its blocks and which
config fields and per-layer attributes depend on a layer's position.

Adding a family means adding one ``Family`` entry below (and one test in tests/test_families.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


def _set_attr_index(attn_path: str) -> Callable[[nn.Module, int, object], None]:
    def fix(layer: nn.Module, idx: int, config) -> None:
        layer.get_submodule(attn_path).layer_idx = idx  # indexes the KV cache

    return fix


def _fix_qwen(layer: nn.Module, idx: int, config) -> None:
    # Qwen2/Qwen3 decide full vs sliding attention per position from config.layer_types.
    attn = layer.self_attn
    attn.layer_idx = idx
    attn.layer_type = config.layer_types[idx]
    attn.sliding_window = config.sliding_window if attn.layer_type == "sliding_attention" else None
    if hasattr(layer, "attention_type"):
        layer.attention_type = config.layer_types[idx]


def _fix_gpt2(layer: nn.Module, idx: int, config) -> None:
    attn = layer.attn
    attn.layer_idx = idx
    # GPT-2 optionally divides attention scores by (layer_idx + 1); recompute from scratch as __init__ does.
    attn.scaling = attn.head_dim**-0.5 if attn.scale_attn_weights else 1.0
    if attn.scale_attn_by_inverse_layer_idx:
        attn.scaling /= float(idx + 1)


def _qwen_layer_types(config, mapping) -> list[str]:
    """New ``layer_types``: the config's own rule at the new depth when the old list followed that
    rule (what a freshly built config of the new depth holds), else each copy takes its source's type."""
    old = list(config.layer_types)
    window = getattr(config, "sliding_window", None)
    rule = lambda n: [  # noqa: E731  (Qwen2Config.__post_init__)
        "sliding_attention" if window is not None and i >= config.max_window_layers else "full_attention"
        for i in range(n)
    ]
    if old == rule(len(old)):
        return rule(len(mapping))
    return [old[src] if src is not None else rule(len(mapping))[i] for i, src in enumerate(mapping)]


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    layers_path: str  # attribute path of the nn.ModuleList of blocks inside the *ForCausalLM model
    # Linear layers whose output is added to the residual stream: scaling them scales the block's
    # branch exactly (weight and bias), zeroing them makes the block the identity.
    out_projections: tuple[str, ...]
    fix_layer: Callable[[nn.Module, int, object], None]
    layer_types: Callable[[object, list], list[str]] | None = None

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        parent, _, name = self.layers_path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, layers)

    def update_config(self, config, mapping: list) -> None:
        if self.layer_types is not None and getattr(config, "layer_types", None) is not None:
            config.layer_types = self.layer_types(config, mapping)
        # GPT2Config maps num_hidden_layers -> n_layer, so one field name serves every family.
        config.num_hidden_layers = len(mapping)


_LLAMA_OUT = ("self_attn.o_proj", "mlp.down_proj")
FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama",), "model.layers", _LLAMA_OUT, _set_attr_index("self_attn")),
    Family("mistral", ("mistral",), "model.layers", _LLAMA_OUT, _set_attr_index("self_attn")),
    Family("qwen2", ("qwen2",), "model.layers", _LLAMA_OUT, _fix_qwen, _qwen_layer_types),
    Family("qwen3", ("qwen3",), "model.layers", _LLAMA_OUT, _fix_qwen, _qwen_layer_types),
    Family("gpt2", ("gpt2",), "transformer.h", ("attn.c_proj", "mlp.c_proj"), _fix_gpt2),
    Family("gpt_neox", ("gpt_neox",), "gpt_neox.layers", ("attention.dense", "mlp.dense_4h_to_h"), _set_attr_index("attention")),
)
SUPPORTED = ", ".join(f.name for f in FAMILIES)


def family_of(model_or_config) -> Family:
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ValueError(f"model_type {model_type!r} is not supported for depth growth; supported families: {SUPPORTED}")
