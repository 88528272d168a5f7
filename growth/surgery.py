"""Model surgery: apply a layer mapping to a HF causal LM in place, keeping it consistent
(blocks, config depth fields, per-layer indices) in one function."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .families import Family, family_of
from .operators import original_positions

INITS = ("copy", "scaled_copy", "zero", "random")


def check_init(init: str, beta: float) -> None:
    if init not in INITS:
        raise ValueError(f"init: unknown init {init!r}; choose one of {', '.join(INITS)}")
    if init == "scaled_copy" and not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1] for scaled_copy, got {beta}")


def _fresh_layer(model: nn.Module, template: nn.Module, idx: int) -> nn.Module:
    # The family's own block class and the model's own _init_weights: what a fresh model of the
    # new depth would hold at this position (config already describes the new depth).
    layer = type(template)(model.config, idx)
    ref = next(template.parameters())
    layer.to(device=ref.device, dtype=ref.dtype)
    layer.apply(model._init_weights)
    return layer


def _copy_layer(layer: nn.Module) -> nn.Module:
    # nn.Parameter.__deepcopy__ clones data only, so gradients of the source are not copied. The
    # memo keeps configs shared: attention modules hold the model's config, and a private copy
    # would miss later changes (set_attn_implementation, output_attentions).
    from transformers import PretrainedConfig

    memo = {id(v): v for m in layer.modules() for v in vars(m).values() if isinstance(v, PretrainedConfig)}
    return copy.deepcopy(layer, memo)


def init_factor(family: Family, param_name: str, init: str, beta: float) -> float:
    """Factor that ``init`` applies to a parameter of a new layer (a full or layer-relative name):
    ``beta`` (scaled_copy) or 0 (zero) on the residual-branch output projections, else 1."""
    if init not in ("scaled_copy", "zero"):
        return 1.0
    module = "." + param_name.rsplit(".", 1)[0]
    if any(module.endswith("." + proj) for proj in family.out_projections):
        return beta if init == "scaled_copy" else 0.0
    return 1.0


@torch.no_grad()
def grow_layers(
    model: nn.Module, mapping: Sequence[int | None], init: str = "copy", beta: float = 1.0
) -> list[tuple[int, int | None]]:
    """Rebuild ``model``'s block list from ``mapping`` in place.

    Old layers move to their first position in the mapping (same module objects, so parameters,
    optimizer references and hooks survive); other positions hold copies, or fresh layers where
    the mapping says ``None``. Then ``init`` is applied to the new layers:
    ``copy`` leaves them, ``scaled_copy`` multiplies each residual-branch output projection by
    ``beta``, ``zero`` zeroes them (the new blocks are the identity, so the model computes exactly
    the same function). Returns ``[(new_position, source_old_index_or_None)]`` for new layers.
    """
    family = family_of(model)
    check_init(init, beta)
    old = family.layers(model)
    keep = original_positions(mapping, len(old))
    kept = dict(zip(keep, range(len(old))))
    family.update_config(model.config, list(mapping))

    layers, added = [], []
    for i, src in enumerate(mapping):
        if i in kept:
            layers.append(old[kept[i]])
            continue
        layer = _fresh_layer(model, old[0], i) if src is None else _copy_layer(old[src])
        for name, p in layer.named_parameters():
            factor = init_factor(family, name, init, beta)
            if factor != 1.0:
                p.mul_(factor)
        layers.append(layer)
        added.append((i, src))

    for i, layer in enumerate(layers):
        family.fix_layer(layer, i, model.config)
    family.set_layers(model, nn.ModuleList(layers))
    return added


def build_grown(model: nn.Module, mapping: Sequence[int | None]) -> nn.Module:
    """A new model of ``model``'s class whose config is grown by ``mapping`` (fresh weights, same
    dtype and train mode). Under ZeRO-3 transformers' ``from_config`` builds it partitioned
    (``deepspeed.zero.Init``), so no rank materialises the full grown model."""
    family = family_of(model)
    config = copy.deepcopy(model.config)
    family.update_config(config, list(mapping))
    grown = type(model)._from_config(config, dtype=next(model.parameters()).dtype)
    grown.train(model.training)
    # Frozen stays frozen: each parameter takes requires_grad from the one it comes from (a fresh
    # layer's from the first old block); from_config would make every parameter trainable.
    old = dict(model.named_parameters())
    layers = family.layers(model)
    names = [n for n, _ in layers[0].named_parameters()]
    sources = parameter_sources(family, [0 if src is None else src for src in mapping], len(layers), names)
    for name, p in grown.named_parameters():
        src = sources.get(name, name)  # outside the blocks: the same name
        if src in old:
            p.requires_grad_(old[src].requires_grad)
    return grown


def parameter_sources(family: Family, mapping: Sequence[int | None], depth: int, layer_param_names: Sequence[str]) -> dict[str, str | None]:
    """Full parameter name in the grown model -> name of the old parameter it comes from (itself
    for kept layers, its source for copies, None for fresh layers), for block parameters only.
    Checkpoints and ZeRO partitions are moved by this table; it is derived from the mapping alone."""
    original_positions(mapping, depth)  # validates
    prefix = family.layers_path
    table: dict[str, str | None] = {}
    for i, src in enumerate(mapping):
        for name in layer_param_names:
            table[f"{prefix}.{i}.{name}"] = None if src is None else f"{prefix}.{src}.{name}"
    return table


def kept_parameters(family: Family, mapping: Sequence[int | None], depth: int, layer_param_names: Sequence[str]) -> set[str]:
    """Names (in the grown model) of the block parameters that are old parameters moved, not copies."""
    prefix = family.layers_path
    return {f"{prefix}.{i}.{n}" for i in original_positions(mapping, depth) for n in layer_param_names}
