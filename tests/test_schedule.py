import math

import pytest
import yaml

from growth.schedule import GrowthSchedule


def test_depth_at_before_at_and_after_each_point():
    schedule = GrowthSchedule(initial_depth=2, points=((100, 4), (200, 6)), unit="steps")
    expected = {0: 2, 99: 2, 100: 4, 101: 4, 199: 4, 200: 6, 201: 6, 10**9: 6}
    assert {step: schedule.depth_at(step) for step in expected} == expected
    assert schedule.final_depth == 6


def test_schedule_without_points_keeps_initial_depth():
    schedule = GrowthSchedule(initial_depth=3, points=())
    assert schedule.depth_at(0) == schedule.depth_at(10**6) == schedule.final_depth == 3


def test_inputs_are_normalised_to_int_steps_and_tuples():
    schedule = GrowthSchedule(initial_depth=2, points=[[100.0, 4], [200, 6]])
    assert schedule.points == ((100, 4), (200, 6))
    assert all(type(step) is int for step, _ in schedule.points)
    hash(schedule)  # frozen and built from tuples, usable as a key


def test_equal_stages():
    assert GrowthSchedule.equal_stages([2, 4, 6, 8]) == GrowthSchedule(
        2, ((0.25, 4), (0.5, 6), (0.75, 8)), "fraction"
    )
    assert GrowthSchedule.equal_stages([2, 4, 6], unit="steps", total=300).points == ((100, 4), (200, 6))
    assert GrowthSchedule.equal_stages([4]).points == ()
    thirds = GrowthSchedule.equal_stages([1, 2, 3]).points
    assert [p for p, _ in thirds] == pytest.approx([1 / 3, 2 / 3])


def test_prop_alpha():
    # alpha=1, 3 stages: lengths 1:2:3 of 6, so growth at 1/6 and 3/6.
    linear = GrowthSchedule.prop_alpha([2, 4, 6], alpha=1)
    assert [p for p, _ in linear.points] == pytest.approx([1 / 6, 1 / 2])
    assert [d for _, d in linear.points] == [4, 6]
    # alpha=2, 4 stages: lengths 1:4:9:16 of 30 over 3000 steps -> 100, 500, 1400.
    quadratic = GrowthSchedule.prop_alpha([1, 2, 3, 4], alpha=2, unit="steps", total=3000)
    assert quadratic.points == ((100, 2), (500, 3), (1400, 4))
    # alpha=0.5, 2 stages: lengths 1:sqrt(2), growth at 1 / (1 + sqrt 2) = sqrt 2 - 1.
    root = GrowthSchedule.prop_alpha([2, 4], alpha=0.5)
    assert root.points[0][0] == pytest.approx(math.sqrt(2) - 1)
    assert GrowthSchedule.prop_alpha([2, 4, 6, 8], alpha=0) == GrowthSchedule.equal_stages([2, 4, 6, 8])


def test_to_steps_fraction_rounds_up_to_the_first_step_reaching_the_point():
    schedule = GrowthSchedule(2, ((0.25, 4), (0.5, 6)), "fraction")
    assert schedule.to_steps(1000) == GrowthSchedule(2, ((250, 4), (500, 6)), "steps")
    # 1/3 and 2/3 of 100 steps: steps 33.3 and 66.7 -> 34 and 67.
    thirds = GrowthSchedule.equal_stages([2, 4, 6])
    assert thirds.to_steps(100).points == ((34, 4), (67, 6))
    # 0.3 * 10 == 3.0000000000000004 in floats; it is step 3, not 4.
    assert GrowthSchedule(2, ((0.3, 4),), "fraction").to_steps(10).points == ((3, 4),)
    # Equivalence: each step gets the depth the fraction schedule gives where that step starts.
    in_steps = thirds.to_steps(100)
    assert all(in_steps.depth_at(s) == thirds.depth_at(s / 100) for s in range(101))


def test_to_steps_tokens():
    schedule = GrowthSchedule(2, ((1000, 4), (2500, 6)), "tokens")
    assert schedule.to_steps(100, tokens_per_step=100).points == ((10, 4), (25, 6))
    # 1000 / 300 = 3.33 -> step 4 (after 4 steps 1200 tokens are seen); 2500 / 300 = 8.33 -> 9.
    in_steps = schedule.to_steps(100, tokens_per_step=300)
    assert in_steps.points == ((4, 4), (9, 6))
    assert all(in_steps.depth_at(s) == schedule.depth_at(s * 300) for s in range(101))


def test_to_steps_flops_integrates_a_depth_dependent_cost():
    def flops_per_token(depth):
        return 10.0 * depth

    # 10 tokens per step: a step costs 200 FLOPs at depth 2, 400 at depth 4.
    schedule = GrowthSchedule(2, ((2000, 4), (6000, 6)), "flops")
    in_steps = schedule.to_steps(100, tokens_per_step=10, flops_per_token=flops_per_token)
    # 2000 / 200 = 10 steps at depth 2, then (6000 - 2000) / 400 = 10 more at depth 4. Costing
    # every step at the initial depth would have put the second growth at step 30.
    assert in_steps.points == ((10, 4), (20, 6))

    uneven = GrowthSchedule(2, ((2100, 4), (6000, 6)), "flops")
    in_steps = uneven.to_steps(100, tokens_per_step=10, flops_per_token=flops_per_token)
    # 2100 / 200 = 10.5 -> step 11 (2200 FLOPs spent); 3800 / 400 = 9.5 -> 10 more -> step 21.
    assert in_steps.points == ((11, 4), (21, 6))
    # Equivalence with the FLOPs actually spent before each step starts.
    spent = 0.0
    for step in range(101):
        assert in_steps.depth_at(step) == uneven.depth_at(spent)
        spent += flops_per_token(in_steps.depth_at(step)) * 10


def test_to_steps_of_a_step_schedule_checks_it_against_max_steps():
    schedule = GrowthSchedule(2, ((10, 4),))
    assert schedule.to_steps(11) == schedule
    with pytest.raises(ValueError, match=r"points\[0\]: 10 steps lands at step 10, which is not before max_steps 10"):
        schedule.to_steps(10)


@pytest.mark.parametrize(("schedule", "kwargs", "match"), [
    (GrowthSchedule(2, ((1e-12, 4),), "fraction"), {"max_steps": 10},
     r"points\[0\]: 1e-12 fraction lands at step 0"),
    (GrowthSchedule(2, ((0.5, 4), (0.95, 6)), "fraction"), {"max_steps": 10},
     r"points\[1\]: 0.95 fraction lands at step 10, which is not before max_steps 10 \(the new layers would never train\)"),
    (GrowthSchedule(2, ((5000, 4),), "tokens"), {"max_steps": 40, "tokens_per_step": 100},
     r"points\[0\]: 5000.0 tokens lands at step 50, which is not before max_steps 40"),
    (GrowthSchedule(2, ((0.25, 4), (0.3, 6)), "fraction"), {"max_steps": 10},
     r"points\[1\]: 0.3 fraction lands on step 3, the same step as points\[0\]"),
    # 2050 / 200 -> step 11, by which 2200 >= 2100 FLOPs are spent: same step.
    (GrowthSchedule(2, ((2050, 4), (2100, 6)), "flops"),
     {"max_steps": 100, "tokens_per_step": 10, "flops_per_token": lambda depth: 10.0 * depth},
     r"points\[1\]: 2100.0 flops lands on step 11, the same step as points\[0\]"),
    (GrowthSchedule(2, ((1000, 4),), "tokens"), {"max_steps": 100},
     r"tokens_per_step: required to convert a schedule in tokens"),
    (GrowthSchedule(2, ((1000, 4),), "flops"), {"max_steps": 100, "tokens_per_step": 10},
     r"flops_per_token: required to convert a schedule in flops"),
    (GrowthSchedule(2, ((1000, 4),), "flops"),
     {"max_steps": 100, "tokens_per_step": 10, "flops_per_token": lambda depth: 0.0},
     r"flops_per_token: must return a positive number, got 0.0 at depth 2"),
    (GrowthSchedule(2, ((0.5, 4),), "fraction"), {"max_steps": 0},
     r"max_steps: must be a positive integer, got 0"),
])
def test_to_steps_errors(schedule, kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedule.to_steps(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"initial_depth": 2, "points": (), "unit": "epochs"},
     r"unit: 'epochs' is not one of steps, tokens, flops, fraction"),
    ({"initial_depth": 0, "points": ()}, r"initial_depth: must be a positive integer, got 0"),
    ({"initial_depth": 2.5, "points": ()}, r"initial_depth: 2.5 is not an integer \(layer counts are never rounded\)"),
    ({"initial_depth": 2, "points": ((0.25, 4), (0.5, 4)), "unit": "fraction"},
     r"points\[1\]: target depth 4 is not larger than the previous depth 4"),
    ({"initial_depth": 2, "points": ((10, 2),)},
     r"points\[0\]: target depth 2 is not larger than the previous depth 2"),
    ({"initial_depth": 2, "points": ((10, 4.0),)},
     r"points\[0\]: target depth 4.0 is not an integer \(layer counts are never rounded\)"),
    ({"initial_depth": 2, "points": ((0.25, 4), (0.5, 6), (1.2, 8)), "unit": "fraction"},
     r"points\[2\]: point 1.2 is past the end of the run \(fraction must be in \(0, 1\)\)"),
    ({"initial_depth": 2, "points": ((1.0, 4),), "unit": "fraction"},
     r"points\[0\]: point 1.0 is at the end of the run \(fraction must be in \(0, 1\)\)"),
    ({"initial_depth": 2, "points": ((0, 4),), "unit": "fraction"},
     r"points\[0\]: point 0 is not after the start of the run \(fraction must be in \(0, 1\)"),
    ({"initial_depth": 2, "points": ((-5, 4),), "unit": "tokens"},
     r"points\[0\]: point -5 is not after the start of the run \(must be > 0"),
    ({"initial_depth": 2, "points": ((0.5, 4), (0.25, 6)), "unit": "fraction"},
     r"points\[1\]: point 0.25 is not larger than the previous point 0.5"),
    ({"initial_depth": 2, "points": ((10, 4), (10, 6))},
     r"points\[1\]: point 10 is not larger than the previous point 10"),
    ({"initial_depth": 2, "points": ((10.5, 4),)}, r"points\[0\]: step 10.5 is not an integer"),
    ({"initial_depth": 2, "points": ((float("nan"), 4),), "unit": "tokens"},
     r"points\[0\]: point nan is not a finite number"),
    ({"initial_depth": 2, "points": ([0.5],), "unit": "fraction"},
     r"points\[0\]: expected a \(point, target depth\) pair, got \[0.5\]"),
    ({"initial_depth": 2, "points": None}, r"points: must be a list of \(point, depth\) pairs, got None"),
])
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GrowthSchedule(**kwargs)


def test_validate_against_max_depth():
    schedule = GrowthSchedule(2, ((10, 4), (20, 8)))
    assert schedule.validate() is schedule
    assert schedule.validate(max_depth=8) is schedule
    with pytest.raises(ValueError, match=r"points\[1\]: target depth 8 is above max_depth 6"):
        schedule.validate(max_depth=6)
    with pytest.raises(ValueError, match=r"initial_depth: 8 is above max_depth 6"):
        GrowthSchedule(8, ()).validate(max_depth=6)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: GrowthSchedule.equal_stages([2, 4, 4]), r"depths\[2\]: depth 4 is not larger than the previous depth 4"),
    (lambda: GrowthSchedule.equal_stages([2, 4.5]), r"depths\[1\]: depth 4.5 is not an integer"),
    (lambda: GrowthSchedule.equal_stages([]), r"depths: must be a non-empty list of depths, got \[\]"),
    (lambda: GrowthSchedule.equal_stages([0, 2]), r"depths\[0\]: depth must be a positive integer, got 0"),
    (lambda: GrowthSchedule.equal_stages([2, 4, 6], total=0), r"total: must be a positive number, got 0"),
    (lambda: GrowthSchedule.prop_alpha([2, 4], alpha=float("inf")), r"alpha: must be a finite number, got inf"),
    # 100 steps do not split into 3 equal integer stages; the error says how to get rounding.
    (lambda: GrowthSchedule.equal_stages([2, 4, 6], unit="steps", total=100),
     r"points\[0\]: step 33.33+\d* is not an integer \(use unit 'fraction' or 'tokens' and to_steps\(\)"),
])
def test_generator_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("schedule", [
    GrowthSchedule(2, ((0.25, 4), (0.5, 6)), "fraction"),
    GrowthSchedule(1, ((100, 2), (300, 4))),
    GrowthSchedule(2, ((2.5e6, 4),), "flops"),
    GrowthSchedule.prop_alpha([2, 4, 6, 8], alpha=1.0),
    GrowthSchedule(3, ()),
])
def test_dict_and_yaml_round_trip(schedule):
    assert GrowthSchedule.from_dict(schedule.to_dict()) == schedule
    assert GrowthSchedule.from_dict(yaml.safe_load(yaml.safe_dump(schedule.to_dict()))) == schedule


def test_to_dict_form():
    schedule = GrowthSchedule(2, ((0.25, 4), (0.5, 6)), "fraction")
    assert schedule.to_dict() == {"initial_depth": 2, "unit": "fraction", "points": [[0.25, 4], [0.5, 6]]}


def test_from_dict_generated_forms():
    assert GrowthSchedule.from_dict({"kind": "equal", "depths": [2, 4, 6, 8]}) == GrowthSchedule.equal_stages([2, 4, 6, 8])
    assert GrowthSchedule.from_dict(
        {"initial_depth": 2, "kind": "prop_alpha", "depths": [2, 4, 6], "alpha": 1.0, "unit": "steps", "total": 600}
    ).points == ((100, 4), (300, 6))
    assert GrowthSchedule.from_dict({"initial_depth": 2, "points": [[10, 4]]}).unit == "steps"


@pytest.mark.parametrize(("d", "match"), [
    ({"initial_depth": 2, "points": [], "unit": "steps", "dephts": [2]},
     r"schedule: unknown key\(s\) 'dephts' \(expected initial_depth, points, unit\)"),
    ({"points": [[10, 4]]}, r"schedule: missing key\(s\) initial_depth"),
    ({"kind": "linear", "depths": [2, 4]}, r"kind: 'linear' is not one of equal, prop_alpha"),
    ({"kind": "prop_alpha", "depths": [2, 4]}, r"schedule: missing key\(s\) alpha"),
    ({"kind": "equal", "depths": [2, 4], "alpha": 1.0}, r"schedule: unknown key\(s\) 'alpha'"),
    ({"kind": "equal", "initial_depth": 1, "depths": [2, 4]},
     r"initial_depth: 1 does not match depths\[0\] 2"),
    ([["0.5", 4]], r"schedule: expected a mapping"),
])
def test_from_dict_errors(d, match):
    with pytest.raises(ValueError, match=match):
        GrowthSchedule.from_dict(d)
