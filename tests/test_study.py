"""eval/study.py's small parts: LR selection, ties, the frontier, FLOPs matching, WSD growth points;
the lr_decay_share recipe field; and the LR schedule continuing exactly across growth under WSD."""

import json
import math

import pytest

from conftest import tiny_model
from eval.study import (Arm, compare_to, flops_to_reach, frontier, growth_steps_in_stable, next_lr, pick_lr,
                        run_flops, steps_for_budget)
from growth.recipe import load_recipe, wsd_decay_steps
from growth.schedule import GrowthSchedule


def test_pick_lr_lowest_loss_edges_and_divergence():
    assert pick_lr({1e-3: 4.0, 2e-3: 3.9, 4e-3: 3.95}) == (2e-3, None)
    assert pick_lr({1e-3: 4.0, 2e-3: 3.9, 4e-3: 3.8}) == (4e-3, "high")
    assert pick_lr({1e-3: 3.7, 2e-3: 3.9, 4e-3: 3.8}) == (1e-3, "low")
    # A diverged run (NaN) is never picked, but still marks the grid's edge.
    assert pick_lr({1e-3: 4.0, 2e-3: 3.9, 4e-3: math.nan}) == (2e-3, None)
    assert pick_lr({1e-3: math.nan, 2e-3: None}) == (None, None)
    assert pick_lr({1e-3: 3.9, 2e-3: 3.9}) == (1e-3, "low")  # ties go to the smaller LR, deterministically


def test_next_lr_extends_towards_the_edge_up_to_the_limit():
    assert next_lr({1e-3: 4.0, 2e-3: 3.9, 4e-3: 3.8}, extended=0, max_extend=2) == 8e-3
    assert next_lr({1e-3: 3.7, 2e-3: 3.9, 4e-3: 3.8}, extended=1, max_extend=2) == 5e-4
    assert next_lr({1e-3: 3.7, 2e-3: 3.9, 4e-3: 3.8}, extended=2, max_extend=2) is None
    assert next_lr({1e-3: 4.0, 2e-3: 3.9, 4e-3: 3.95}, extended=0, max_extend=2) is None


def test_compare_to_calls_ties_within_two_pooled_std():
    a, b = [3.00, 3.02, 3.04], [3.05, 3.07, 3.09]  # both std 0.02: pooled 0.02, diff -0.05 > 2 * 0.02
    r = compare_to(a, b)
    assert r["diff"] == pytest.approx(-0.05) and r["pooled_std"] == pytest.approx(0.02) and r["verdict"] == "lower"
    assert compare_to(b, a)["verdict"] == "higher"
    assert compare_to([3.00, 3.02, 3.04], [3.03, 3.05, 3.07])["verdict"] == "tie"  # diff 0.03 <= 0.04
    assert compare_to([3.0], [3.1])["verdict"] == "n/a (1 seed)"


def test_frontier_is_the_best_fixed_depth_per_budget():
    per_budget = {0.5: {"fixed_2": [3.0, 3.1], "fixed_4": [3.2, 3.3], "fixed_6": []},
                  1.0: {"fixed_2": [2.9, 2.9], "fixed_4": [2.7, 2.8]}}
    assert frontier(per_budget) == {0.5: ("fixed_2", [3.0, 3.1]), 1.0: ("fixed_4", [2.7, 2.8])}


def test_flops_to_reach_interpolates_in_log_flops_and_never_extrapolates():
    curve = [(1e10, 4.0), (2e10, 3.0), (4e10, 2.5)]
    assert flops_to_reach(curve, 3.5) == pytest.approx(math.sqrt(1e10 * 2e10))  # halfway in log x
    assert flops_to_reach(curve, 2.5) == pytest.approx(4e10)
    assert flops_to_reach(curve, 4.5) == 1e10
    assert flops_to_reach(curve, 2.4) is None


@pytest.mark.parametrize("arm", [Arm("fixed_2", depth=2), Arm("fixed_8", depth=8),
                                 Arm("early", points=((0.25, 4), (0.5, 6))), Arm("late_2x", points=((0.6, 4), (0.8, 8)))])
def test_steps_for_budget_is_the_closest_step_count(arm):
    config = tiny_model("llama", layers=2, hidden=32, vocab=512).config
    seq, tps = 32, 256
    budget = 0.5 * run_flops(config, seq, tps, Arm("ref", points=((0.25, 4), (0.5, 6))), 2000)
    steps = steps_for_budget(config, seq, tps, arm, budget)
    err = abs(run_flops(config, seq, tps, arm, steps) - budget)
    for other in (steps - 1, steps + 1):  # no other step count is closer
        assert err <= abs(run_flops(config, seq, tps, arm, other) - budget)
    assert err / budget < 2e-3  # one step of ~1000: equal compute to 0.2%


def test_wsd_growth_points_inside_the_stable_phase():
    warmup, decay = math.ceil(0.05 * 2000), wsd_decay_steps(0.15, 2000)  # 100, 300: stable is steps 100..1699
    early = GrowthSchedule(2, ((0.25, 4), (0.5, 6)), unit="fraction")
    late = GrowthSchedule(2, ((0.6, 4), (0.8, 8)), unit="fraction")
    assert growth_steps_in_stable(early, 2000, warmup, decay) == [500, 1000]
    assert growth_steps_in_stable(late, 2000, warmup, decay) == [1200, 1600]
    with pytest.raises(ValueError, match=r"points\[1\]: growth at step 1800 of 2000 is outside the WSD stable phase"):
        growth_steps_in_stable(GrowthSchedule(2, ((0.6, 4), (0.9, 6)), unit="fraction"), 2000, warmup, decay)
    with pytest.raises(ValueError, match=r"points\[0\]: growth at step 40 of 2000"):
        growth_steps_in_stable(GrowthSchedule(2, ((0.02, 4),), unit="fraction"), 2000, warmup, decay)


def test_lr_decay_share_recipe_field():
    r = load_recipe("recipes/study_tiny.yaml", ["--max_steps", "1000"])
    assert r.lr_decay_share == 0.15 and "lr_decay_share" not in r.training
    assert r.training_arguments_kwargs()["lr_scheduler_kwargs"] == {"num_decay_steps": 150}
    with pytest.raises(ValueError, match=r"lr_decay_share: must be in \(0, 1\).*got 1.5"):
        load_recipe("recipes/study_tiny.yaml", ["--lr_decay_share", "1.5"])
    with pytest.raises(ValueError, match="lr_decay_share: 0.2 is only used with training.lr_scheduler_type "
                                         "warmup_stable_decay, got lr_scheduler_type 'cosine'"):
        load_recipe("recipes/tiny.yaml", ["--lr_decay_share", "0.2"])
    with pytest.raises(ValueError, match="lr_decay_share: training.lr_scheduler_type warmup_stable_decay needs"):
        load_recipe("recipes/tiny.yaml", ["--lr_scheduler_type", "warmup_stable_decay"])
    with pytest.raises(ValueError, match="both set the decay length"):
        load_recipe("recipes/study_tiny.yaml", ["--lr_scheduler_kwargs", "{num_decay_steps: 10}"])
    with pytest.raises(ValueError, match="exceed training.max_steps 10"):
        load_recipe("recipes/study_tiny.yaml", ["--max_steps", "10", "--warmup_steps", "9"])


def test_wsd_lr_continues_exactly_across_growth(tmp_path):
    """A real run under warmup_stable_decay growing 2 -> 4 -> 6 inside the stable phase: the LR at every
    step is transformers' WSD schedule for the whole run, as if the model had never changed."""
    import torch
    from transformers.optimization import get_wsd_schedule

    from growth.run import RunOptions, run

    steps = 20
    out = tmp_path / "run"
    recipe = load_recipe("recipes/study_tiny.yaml", [
        "--max_steps", str(steps), "--lr_decay_share", "0.3", "--warmup_steps", "4", "--logging_steps", "1",
        "--eval_strategy", "no", "--model.hidden_size", "16", "--data.max_train_bytes", "200000",
        "--tokenizer.vocab_size", "300", "--data.max_eval_tokens", "256", "--data.cache_dir", str(tmp_path / "cache"),
        "--growth.schedule", "{initial_depth: 2, unit: steps, points: [[6, 4], [10, 6]]}", "--output_dir", str(out)])
    warmup, decay = 4, wsd_decay_steps(0.3, steps)
    assert growth_steps_in_stable(recipe.growth.schedule, steps, warmup, decay) == [6, 10]
    run(recipe, RunOptions())

    events = [json.loads(l) for l in (out / "growth_events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["to_depth"]) for e in events] == [(6, 4), (10, 6)]
    logged = {r["step"]: r["learning_rate"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "learning_rate" in r}
    assert sorted(logged) == list(range(1, steps + 1))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.training["learning_rate"])
    sched = get_wsd_schedule(opt, num_warmup_steps=warmup, num_decay_steps=decay, num_training_steps=steps)
    expected = {}
    for step in range(1, steps + 1):  # logged at step s: the LR step s (1-based) trained with
        expected[step] = sched.get_last_lr()[0]
        opt.step(), sched.step()
    assert logged == expected
    assert logged[6] == logged[7] == logged[10] == logged[11] == recipe.training["learning_rate"]  # stable at growth


@pytest.mark.parametrize("recipe,share,ok", [("recipes/study_gpu_125m.yaml", None, True),
                                             ("recipes/study_gpu_125m.yaml", "0.2", False),
                                             ("recipes/study_tiny.yaml", None, True)])
def test_study_checks_every_growth_run_inside_the_stable_phase(recipe, share, ok, tmp_path):
    """Before the first run: every growth cell's events inside its WSD stable phase. With the GPU
    recipe's earlier 20% decay, late growth at 80% landed on the first decay step (refused, named)."""
    from dataclasses import replace

    from eval.study import GPU_125M, Study, StudyConfig
    from growth.models import build_config

    cfg = replace(GPU_125M if "gpu" in recipe else StudyConfig(), extra=["--lr_decay_share", share] if share else [])
    study = Study(tmp_path, cfg)
    study.config = build_config(study.recipe.model, 50257 if "gpu" in recipe else 512)
    study.ref_flops = run_flops(study.config, study.seq_len, study.tokens_per_step, cfg.arm(cfg.ref_arm), cfg.ref_steps)
    if ok:
        study.check_growth_in_stable()
    else:
        with pytest.raises(ValueError, match=r"wsd_late_3-6-12 at budget 0.25 \(\d+ steps\), lr_decay_share 0.2: "
                                             r"points\[1\]: growth at step \d+ of \d+ is outside the WSD stable phase"):
            study.check_growth_in_stable()
