"""scripts/train.py end to end on the tiny recipe (shrunk), and its output_dir rules."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from growth.recipe import load_recipe
from growth.run import RunOptions, check_output_dir, main

ROOT = Path(__file__).resolve().parent.parent
# The tiny recipe, shrunk: a 32-wide model, 12 steps, 200 kB of text, a 512-token BPE.
SMALL = ["--config", "recipes/tiny.yaml", "--max_steps", "12", "--model.hidden_size", "32",
         "--data.max_train_bytes", "200000", "--data.max_eval_tokens", "2048", "--tokenizer.vocab_size", "512",
         "--logging_steps", "3", "--eval_steps", "6", "--save_steps", "6", "--disable_tqdm", "true"]


def _small(tmp, *extra):
    return [*SMALL, "--data.cache_dir", str(tmp / "cache"), "--output_dir", str(tmp / "run"), *extra]


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "scripts/train.py", *_small(tmp)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_script_end_to_end(trained):
    tmp, log = trained
    out = tmp / "run"
    assert "[growth] step 3: depth 2 -> 4 (stack_last, copy)" in log
    assert "[growth] step 6: depth 4 -> 6 (stack_last, copy)" in log
    assert "[run] done: step 12, depth 6" in log

    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
    assert len(tokenizer) == 512 and model.config.vocab_size == 512
    ids = tokenizer("def f(x):\n    return x + 1\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids, labels=ids).loss)
    ckpt = json.loads((out / "checkpoint-6" / "config.json").read_text())
    assert ckpt["num_hidden_layers"] == 6  # saved after the growth at step 6

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in train_logs] == [3, 6, 9, 12] and [m["step"] for m in evals] == [6, 12]
    for m in metrics:
        assert {"step", "wall_time", "tokens", "flops", "depth", "params"} <= m.keys()
        assert m["tokens"] == m["step"] * 16 * 128
    assert [m["depth"] for m in train_logs] == [4, 6, 6, 6]  # growth at step s runs before that step's log
    events = [json.loads(line) for line in (out / "growth_events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["from_depth"], e["to_depth"], e["mapping"]) for e in events] == [
        (3, 2, 4, [0, 1, 0, 1]), (6, 4, 6, [0, 1, 2, 3, 2, 3])]

    info = json.loads((out / "run.json").read_text())
    assert {"name", "label", "seed", "baseline", "max_steps", "tags", "recipe"} <= info.keys()
    assert (info["name"], info["label"], info["seed"], info["baseline"], info["max_steps"]) == ("tiny", "stack_last", 0, False, 12)
    assert info["final_depth"] == 6 and info["final_eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    assert info["final_eval_loss"] < evals[0]["eval_loss"] < 7  # it learned something (ln 512 = 6.24)
    saved = load_recipe(out / "recipe.yaml")
    assert saved.to_dict() == info["recipe"] and saved.model.hidden_size == 32 and saved.training["max_steps"] == 12


@pytest.mark.slow
def test_existing_output_dir_is_never_overwritten_silently(trained, capsys):
    tmp, _ = trained
    out = tmp / "run"
    before = _snapshot(out)
    assert main(_small(tmp)) == 2
    err = capsys.readouterr().err
    assert f"error: output_dir: '{out}' is not empty" in err and "--resume_from_checkpoint" in err
    assert "--overwrite_output_dir true" in err
    assert _snapshot(out) == before


def test_output_dir_rules(tmp_path):
    assert check_output_dir(tmp_path / "new", RunOptions()) == (None, [])
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", RunOptions()) == (None, [])
    out = tmp_path / "old"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=r"output_dir: '.*old' is not empty \(2 entries: checkpoint-5, metrics.jsonl\)"):
        check_output_dir(out, RunOptions())
    assert "resuming" in check_output_dir(out, RunOptions(resume_from_checkpoint=True))[0]
    note, stale = check_output_dir(out, RunOptions(overwrite_output_dir=True))
    assert "overwriting output_dir" in note and "1 old checkpoint(s) are removed when training starts" in note
    assert stale == [out / "checkpoint-5"] and (out / "checkpoint-5").exists()  # the check itself removes nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file", RunOptions())


def test_bad_recipe_fails_before_any_work(tmp_path, capsys):
    assert main(["--config", "recipes/tiny.yaml", "--growth.operatr", "stack_all", "--output_dir", str(tmp_path / "x")]) == 2
    assert "error: recipe tiny.yaml: growth.operatr: unknown key (did you mean 'operator'?)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--config" in text and "--growth.operator" in text and "--max_steps" in text
