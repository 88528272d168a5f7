"""eval/sweep.py: the equal-FLOPs arithmetic by hand, and a very small sweep end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_model
from eval.sweep import EQUAL_FLOPS, Job, command, equal_flops_steps, growth_run_flops, plan
from growth.schedule import GrowthSchedule

ROOT = Path(__file__).resolve().parent.parent


def _per_token(config, seq, depth):
    """Training FLOPs per token written out by hand for a llama block (no shared code with growth/flops.py)."""
    h, q, kv, inter, vocab = (config.hidden_size, config.num_attention_heads * config.head_dim,
                              config.num_key_value_heads * config.head_dim, config.intermediate_size, config.vocab_size)
    per_layer = 2 * h * q + 2 * 2 * h * kv + 2 * q * h + 4 * seq * q + 2 * 3 * h * inter
    return 3 * (depth * per_layer + 2 * h * vocab)


def test_equal_flops_steps_by_hand():
    config = tiny_model("llama", layers=6, hidden=32, vocab=97).config
    seq, tps = 16, 4 * 16
    sched = GrowthSchedule.from_dict({"initial_depth": 2, "unit": "steps", "points": [[2, 3], [5, 4]]})
    total = tps * (2 * _per_token(config, seq, 2) + 3 * _per_token(config, seq, 3) + 5 * _per_token(config, seq, 4))
    assert growth_run_flops(config, seq, sched, 10, tps) == pytest.approx(total, rel=1e-12)
    assert equal_flops_steps(config, seq, sched, 10, tps) == round(total / (tps * _per_token(config, seq, 4)))

    # The tiny recipe's shape: 2 layers for the first quarter, 4 for the second, 6 for the second half.
    frac = GrowthSchedule.from_dict({"initial_depth": 2, "unit": "fraction", "points": [[0.25, 4], [0.5, 6]]})
    f = {d: _per_token(config, seq, d) for d in (2, 4, 6)}
    expect = round((100 * f[2] + 100 * f[4] + 200 * f[6]) / f[6])
    assert equal_flops_steps(config, seq, frac, 400, tps) == expect
    assert 200 < expect < 400  # fewer steps than the growth run, more than its full-depth half


def test_plan_and_command(tmp_path):
    jobs, growth_label, baseline = plan("default", ["tiny", "tiny_baseline"], 2, [])
    assert [(j.label, j.seed, j.config) for j in jobs] == [
        ("stack_last", 0, "recipes/tiny.yaml"), ("stack_last", 1, "recipes/tiny.yaml"),
        ("baseline", 0, "recipes/tiny_baseline.yaml"), ("baseline", 1, "recipes/tiny_baseline.yaml")]
    assert (growth_label, baseline) == ("stack_last", "baseline")
    with pytest.raises(ValueError, match=r"--recipes: must include tiny"):
        plan("default", ["tiny_baseline"], 1, [])
    jobs, growth_label, baseline = plan("paper", [], 3, [])
    assert {j.label for j in jobs} == {"init_copy", "init_zero", "init_random", "init_scaled_copy_b0.5", "init_scaled_copy_b0.9"}
    assert len(jobs) == 15 and (growth_label, baseline) == ("init_copy", EQUAL_FLOPS)
    scaled = next(j for j in jobs if j.label == "init_scaled_copy_b0.9")
    assert scaled.overrides == ["--growth.init", "scaled_copy", "--growth.beta", "0.9"]

    cmd = command(Job("stack_last", "recipes/tiny.yaml", 2, ["--max_steps", "7"]), tmp_path / "r", 10, ["--model.hidden_size", "64"])
    text = " ".join(cmd)
    assert "--seed 2 --data_seed 0" in text and text.endswith("--max_steps 10 --model.hidden_size 64 --max_steps 7")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    assert command(Job("a", "c", 0), tmp_path / "r", None, [])[-2:] == ["--overwrite_output_dir", "true"]
    (tmp_path / "r" / "checkpoint-3").mkdir()
    assert command(Job("a", "c", 0), tmp_path / "r", None, [])[-2:] == ["--resume_from_checkpoint", "true"]


SMALL = ("--model.hidden_size 32 --model.max_position_embeddings 32 --data.block_size 32 --data.max_eval_tokens 256 "
         "--tokenizer.vocab_size 300 --per_device_train_batch_size 4 --per_device_eval_batch_size 8 --logging_steps 1 "
         "--save_strategy no --disable_tqdm true --eval_steps 0.5")


@pytest.mark.slow
def test_small_sweep_end_to_end(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("schedule.py", "recipe.py", "flops.py", "operators.py"):  # a few KB of real text
        (corpus / f"{name}.txt").write_text((ROOT / "growth" / name).read_text())
    extra = f"{SMALL} --data.source {corpus} --data.cache_dir {tmp_path / 'cache'}"
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "eval" / "sweep.py"), "--out", str(out), "--seeds", "2", "--max_steps", "8",
           "--recipes", "tiny,tiny_baseline", "--extra", extra]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == sorted(f"{label}-s{s}" for label in ("stack_last", "baseline", EQUAL_FLOPS) for s in (0, 1))
    infos = {n: json.loads((out / "runs" / n / "run.json").read_text()) for n in names}
    assert infos["stack_last-s1"]["seed"] == 1 and infos["stack_last-s1"]["final_depth"] == 6
    assert infos["baseline-s0"]["global_step"] == 8
    # Same data order across seeds: the first training loss of the two baseline seeds differs only by init,
    # and every run records data_seed 0.
    assert all(i["recipe"]["training"]["data_seed"] == 0 for i in infos.values())

    # The equal-FLOPs baseline's last logged FLOPs match the growth run's to within one full-depth step.
    def last_flops(name):
        rows = [json.loads(l) for l in (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        return [x["flops"] for x in rows if "flops" in x][-1]

    eq_steps = infos[f"{EQUAL_FLOPS}-s0"]["global_step"]
    assert 4 <= eq_steps < 8
    per_step = last_flops(f"{EQUAL_FLOPS}-s0") / eq_steps
    assert abs(last_flops(f"{EQUAL_FLOPS}-s0") - last_flops("stack_last-s0")) <= per_step / 2

    report = (out / "report" / "report.md").read_text()
    for label in ("stack_last", "baseline", EQUAL_FLOPS):
        assert label in report
    assert (out / "report" / "loss_vs_flops.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 6 and summary["total"]["steps"] == 8 * 4 + 2 * eq_steps
    assert summary["total"]["tokens"] == summary["total"]["steps"] * 4 * 32

    # Run again: every run is finished, nothing retrains, the report is rewritten.
    r2 = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0 and r2.stdout.count("finished earlier, skipped") == 6, r2.stdout[-2000:]
