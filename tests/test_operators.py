import pytest

from growth.operators import interleave, make_mapping, original_positions, stack_all, stack_last, stack_middle


def test_stack_last():
    assert stack_last(2, 3) == [0, 1, 1]
    assert stack_last(4, 6) == [0, 1, 2, 3, 2, 3]
    assert stack_last(4, 7, block=2) == [0, 1, 2, 3, 2, 3, 2]
    assert stack_last(2, 6) == [0, 1, 0, 1, 0, 1]


def test_stack_middle():
    assert stack_middle(4, 6) == [0, 1, 2, 1, 2, 3]
    assert stack_middle(4, 5, block=2) == [0, 1, 2, 1, 3]
    assert stack_middle(3, 4) == [0, 1, 1, 2]
    assert stack_middle(5, 6, block=1) == [0, 1, 2, 2, 3, 4]


def test_stack_all_and_interleave():
    assert stack_all(2, 4) == [0, 1, 0, 1]
    assert stack_all(2, 5) == [0, 1, 0, 1, 0]
    assert stack_all(3, 8) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert interleave(2, 4) == [0, 0, 1, 1]
    assert interleave(3, 5) == [0, 1, 1, 2, 2]
    assert interleave(2, 7) == [0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("op", ["stack_last", "stack_middle", "stack_all", "interleave"])
@pytest.mark.parametrize("depth,target", [(1, 2), (2, 3), (3, 7), (4, 6), (4, 16)])
def test_every_mapping_keeps_old_layers_in_order(op, depth, target):
    mapping = make_mapping(op, depth, target)
    assert len(mapping) == target
    keep = original_positions(mapping, depth)
    assert keep == sorted(keep) and [mapping[p] for p in keep] == list(range(depth))


def test_impossible_requests_raise():
    with pytest.raises(ValueError, match="target depth 2 must be larger than the current depth 4"):
        stack_last(4, 2)
    with pytest.raises(ValueError, match="target depth 4 must be larger"):
        stack_all(4, 4)
    with pytest.raises(ValueError, match="block 5 must be between 1 and the current depth 4"):
        stack_middle(4, 8, block=5)
    with pytest.raises(ValueError, match="unknown operator 'stack_top'; choose one of stack_last, stack_middle"):
        make_mapping("stack_top", 2, 4)
    with pytest.raises(ValueError, match="block: stack_all always copies the whole stack"):
        stack_all(2, 4, block=1)
    with pytest.raises(ValueError, match="drops old layers"):
        original_positions([0, 0, 1], 3)
    with pytest.raises(ValueError, match="before layer 0 appears"):
        original_positions([1, 0], 2)
