"""Growth operators: each returns a layer mapping, the one idea that carries every operator.

A mapping for growing a stack of ``depth`` layers to ``target`` layers is a list of length
``target`` whose entry ``i`` is the index of the old layer that new layer ``i`` copies. The first
occurrence of each old index *is* that old layer (same parameters, same optimizer state); later
occurrences are copies. Every old layer appears and their first occurrences are in order, so
growth never drops or reorders what was trained. ``None`` marks a layer with no source (random
init). Weights, optimizer moments, ZeRO partitions and checkpoints are all moved by this list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Mapping = list  # list[int | None]


def _check(depth: int, target: int, block: int | None) -> int:
    if depth < 1:
        raise ValueError(f"current depth must be at least 1, got {depth}")
    if target <= depth:
        raise ValueError(f"target depth {target} must be larger than the current depth {depth} (growth never shrinks)")
    if block is None:
        return min(depth, target - depth)
    if not 1 <= block <= depth:
        raise ValueError(f"block {block} must be between 1 and the current depth {depth}")
    return block


def stack_last(depth: int, target: int, block: int | None = None) -> Mapping:
    """Gradual stacking: copies of the top ``block`` layers placed on top, repeated until ``target``.

    ``block`` defaults to the number of layers added (capped at ``depth``), i.e. each new layer
    copies a distinct top layer: 4 -> 6 gives [0, 1, 2, 3, 2, 3].
    """
    block = _check(depth, target, block)
    top = list(range(depth - block, depth))
    return list(range(depth)) + [top[i % block] for i in range(target - depth)]


def stack_middle(depth: int, target: int, block: int | None = None) -> Mapping:
    """MIDAS: copies of the middle ``block`` layers inserted right after that block.

    The block starts at ``(depth - block) // 2`` (left of centre when the split is uneven):
    4 -> 6 gives [0, 1, 2, 1, 2, 3].
    """
    block = _check(depth, target, block)
    start = (depth - block) // 2
    middle = list(range(start, start + block))
    copies = [middle[i % block] for i in range(target - depth)]
    return list(range(start + block)) + copies + list(range(start + block, depth))


def stack_all(depth: int, target: int, block: int | None = None) -> Mapping:
    """Progressive stacking / G_stack: the whole stack repeated; a partial last repeat takes the
    bottom layers (2 -> 5 gives [0, 1, 0, 1, 0])."""
    if block is not None:
        raise ValueError(f"block: stack_all always copies the whole stack, got block={block}")
    _check(depth, target, None)
    return [i % depth for i in range(target)]


def interleave(depth: int, target: int, block: int | None = None) -> Mapping:
    """Interposition: each layer followed by its copies. Layer i appears
    floor((i+1)*target/depth) - floor(i*target/depth) times, so a target that is not a multiple
    spreads the extra copies evenly (3 -> 5 gives [0, 1, 1, 2, 2])."""
    if block is not None:
        raise ValueError(f"block: interleave copies every layer, got block={block}")
    _check(depth, target, None)
    return [i for i in range(depth) for _ in range((i + 1) * target // depth - i * target // depth)]


OPERATORS: dict[str, Callable[..., Mapping]] = {
    "stack_last": stack_last,
    "stack_middle": stack_middle,
    "stack_all": stack_all,
    "interleave": interleave,
}


def make_mapping(operator: str, depth: int, target: int, block: int | None = None) -> Mapping:
    if operator not in OPERATORS:
        raise ValueError(f"operator: unknown operator {operator!r}; choose one of {', '.join(OPERATORS)}")
    return OPERATORS[operator](depth, target, block)


def original_positions(mapping: Sequence[int | None], depth: int) -> list[int]:
    """Position in the new stack of each old layer (its first occurrence); validates the mapping."""
    positions: list[int] = []
    for i, src in enumerate(mapping):
        if src is None:
            continue
        if not 0 <= src < depth:
            raise ValueError(f"mapping[{i}] = {src} is not a layer of a {depth}-layer model")
        if src == len(positions):
            positions.append(i)
        elif src > len(positions):
            raise ValueError(f"mapping[{i}] copies layer {src} before layer {len(positions)} appears; old layers must keep their order")
    if len(positions) != depth:
        raise ValueError(f"mapping drops old layers {list(range(len(positions), depth))}; every old layer must appear")
    return positions
