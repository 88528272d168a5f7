"""Nothing lost (issue 16): refused starts leave output_dir byte-identical, checkpoints are atomic,
SIGTERM / SIGINT save and stop, resumes are honest, non-finite numbers stop the run, not the model.

Runs go through growth.run.main (in process, or scripts/train.py in a subprocess where a real
signal from outside is the point) on the tiny recipe shrunk to seconds."""

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from growth.run import main
from growth.safety import STAGING, checkpoint_problem, newest_checkpoint, recipe_changes

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "recipes" / "tiny.yaml")
SMALL = ["--max_steps", "8", "--model.hidden_size", "32", "--data.block_size", "32", "--model.max_position_embeddings", "32",
         "--data.max_train_bytes", "60000", "--data.max_eval_tokens", "256", "--tokenizer.vocab_size", "300",
         "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--logging_steps", "1",
         "--eval_steps", "4", "--save_steps", "4", "--disable_tqdm", "true", "--report_to", "none"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def argv(out, cache, *extra, config=TINY):
    return ["--config", str(config), *SMALL, "--data.cache_dir", cache, "--output_dir", str(out), *extra]


def tree_hash(path: Path) -> str | None:
    """Names and bytes of everything under ``path`` (None if it does not exist)."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def assert_same_losses(a: dict, b: dict, rel=1e-5):
    assert sorted(a) == sorted(b)
    for step in a:
        assert abs(a[step] - b[step]) <= rel * abs(b[step]), (step, a[step], b[step])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache):
    """A finished 8-step run (growth 2 -> 4 -> 6 at steps 2 and 4; checkpoints 4 and 8)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(argv(out, cache)) == 0
    return out


@pytest.fixture(scope="module")
def killed(finished, tmp_path_factory):
    """The same run as if killed after step 5: checkpoint-4, the start's run.json, no final model."""
    out = tmp_path_factory.mktemp("killed") / "run"
    out.mkdir()
    for name in ("checkpoint-4", "recipe.yaml"):
        src = finished / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
    info = json.loads((finished / "run.json").read_text())
    start = {k: info[k] for k in ("name", "label", "seed", "baseline", "max_steps", "tags", "recipe")}
    (out / "run.json").write_text(json.dumps({**start, "status": "running"}))
    lines = (finished / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(l for l in lines if json.loads(l)["step"] <= 5) + "\n")
    return out


def test_checkpoints_are_complete_and_carry_the_recipe(finished):
    assert not (finished / STAGING).exists()
    for name in ("checkpoint-4", "checkpoint-8"):
        assert checkpoint_problem(finished / name) is None
        assert (finished / name / "recipe.yaml").read_text() == (finished / "recipe.yaml").read_text()
    info = json.loads((finished / "run.json").read_text())
    assert info["status"] == "finished" and info["global_step"] == 8


def test_resume_of_a_finished_run_changes_nothing(finished, tmp_path, cache, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = tree_hash(out)
    assert main(argv(out, cache, "--resume_from_checkpoint", "true")) == 0
    assert "is finished (step 8 of 8): nothing to do, nothing changed" in capsys.readouterr().out
    assert tree_hash(out) == before


def test_resume_true_takes_the_newest_complete_checkpoint(killed, finished, tmp_path, cache, capsys):
    """An incomplete checkpoint-6 (truncated optimizer.pt) and an interrupted save in .staging are
    skipped and named; the run continues from checkpoint-4 exactly as the uninterrupted run did."""
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    shutil.copytree(out / "checkpoint-4", out / "checkpoint-6")
    opt = out / "checkpoint-6" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:1000])
    (out / STAGING / "checkpoint-7").mkdir(parents=True)
    assert main(argv(out, cache, "--resume_from_checkpoint", "true")) == 0
    log = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoint-4'} (the newest complete checkpoint); skipped {STAGING}/checkpoint-7 " \
           "(a save that was interrupted), checkpoint-6 (optimizer.pt is truncated" in log
    assert_same_losses(losses(out), losses(finished))
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["resumes"] == [{"step": 4, "checkpoint": str(out / "checkpoint-4")}]
    assert not (out / STAGING).exists()


def test_recipe_change_needs_the_override_and_is_recorded(killed, tmp_path, cache, capsys):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    before = tree_hash(out)
    assert main(argv(out, cache, "--resume_from_checkpoint", "true", "--learning_rate", "5e-4")) == 2
    err = capsys.readouterr().err
    assert "training.learning_rate (0.001 -> 0.0005)" in err and "--allow_recipe_change true" in err
    assert tree_hash(out) == before
    # Only the fields that shape the run count: logging, saving and output paths may change freely.
    assert recipe_changes({"training": {"logging_steps": 1, "save_steps": 4, "max_steps": 8}, "data": {"cache_dir": "a"}},
                          {"training": {"logging_steps": 5, "save_steps": 2, "max_steps": 8}, "data": {"cache_dir": "b"}}) == {}
    assert main(argv(out, cache, "--resume_from_checkpoint", "true", "--learning_rate", "5e-4",
                     "--allow_recipe_change", "true")) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["resumes"][-1]["recipe_changes"] == {"training.learning_rate": [0.001, 0.0005]}
    assert info["resumes"][-1]["allowed_by"] == "--allow_recipe_change true"
    old = (out / "recipe.before-step-4.yaml").read_text()
    assert "learning_rate: 0.001" in old and "learning_rate: 0.0005" in (out / "recipe.yaml").read_text()


def test_nonfinite_loss_stops_the_run_and_keeps_the_good_model(finished, tmp_path, cache, capsys):
    """Training a finished run on (max_steps 8 -> 16) from a checkpoint whose optimizer moments hold
    a NaN: the first update breaks the weights, the loss turns NaN; after safety.nonfinite_loss_steps
    such steps the run stops. No checkpoint of a broken model is saved and the good final model and
    checkpoint-8 are untouched."""
    import torch

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    opt = out / "checkpoint-8" / "optimizer.pt"
    state = torch.load(opt)
    next(iter(state["state"].values()))["exp_avg"].fill_(float("nan"))
    torch.save(state, opt)
    kept = {p: p.read_bytes() for p in [out / "model.safetensors", *(out / "checkpoint-8").iterdir()]}
    rc = main(argv(out, cache, "--resume_from_checkpoint", "true", "--allow_recipe_change", "true", "--max_steps", "16",
                   "--safety.nonfinite_loss_steps", "2"))
    log = capsys.readouterr().out
    assert rc == 3, log[-3000:]
    assert (f"[run] stopped: the training loss was non-finite for 2 consecutive steps (from step 10, "
            f"safety.nonfinite_loss_steps 2); the model was not saved; last good checkpoint: {out / 'checkpoint-8'}") in log
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "stopped" and info["stopped_at_step"] == 11
    assert info["last_good_checkpoint"] == str(out / "checkpoint-8")
    assert all(p.read_bytes() == b for p, b in kept.items())
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert not (out / STAGING).exists()


# ---------------------------------------------------------------------------------------------
# Preemption


LONG = ["--max_steps", "16", "--save_steps", "1000", "--eval_strategy", "no"]  # growth at steps 4 and 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(argv(out, cache, *LONG)) == 0
    return losses(out)


def test_sigint_at_a_growth_step_saves_the_grown_model_and_resumes_exactly(reference, tmp_path, cache, capsys, monkeypatch):
    """A real SIGINT, raised during step 4 just before the growth callback grows 2 -> 4 layers: the
    checkpoint is taken right after that growth, and the resumed run matches the uninterrupted one."""
    from growth.trainer import GrowthCallback

    grow = GrowthCallback.on_step_end

    def signal_then_grow(self, args, state, control, **kwargs):
        if state.global_step == 4:
            signal.raise_signal(signal.SIGINT)
        return grow(self, args, state, control, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(GrowthCallback, "on_step_end", signal_then_grow)
    assert main(argv(out, cache, *LONG)) == 128 + signal.SIGINT
    monkeypatch.undo()
    log = capsys.readouterr().out
    assert "[run] SIGINT: saving a checkpoint at the next step boundary" in log
    assert (f"[run] stopped by SIGINT at step 4: checkpoint saved to {out / 'checkpoint-4'}; resume with: "
            f"python scripts/train.py --config {out / 'recipe.yaml'} --output_dir {out} --resume_from_checkpoint true") in log
    assert json.loads((out / "checkpoint-4" / "config.json").read_text())["num_hidden_layers"] == 4
    assert json.loads((out / "run.json").read_text())["status"] == "preempted"
    assert not (out / "model.safetensors").exists()
    assert main(argv(out, cache, *LONG, "--resume_from_checkpoint", "true")) == 0
    assert_same_losses(losses(out), reference)


def _start(out, cache):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *argv(out, cache, *LONG)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_steps(proc, out, n, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = out / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    raise AssertionError("the run did not reach its first steps")


def test_sigterm_from_outside_saves_stops_and_resumes_exactly(reference, tmp_path, cache):
    out = tmp_path / "run"
    proc = _start(out, cache)
    _wait_for_steps(proc, out, 2)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert "Traceback" not in log
    line = next(l for l in log.splitlines() if l.startswith("[run] stopped by SIGTERM"))
    step = int(line.split(" at step ")[1].split(":")[0])
    assert f"checkpoint saved to {out / f'checkpoint-{step}'}; resume with:" in line and step < 16
    assert checkpoint_problem(out / f"checkpoint-{step}") is None
    assert main(argv(out, cache, *LONG, "--resume_from_checkpoint", "true")) == 0
    assert_same_losses(losses(out), reference, rel=1e-4)


def test_a_second_signal_exits_at_once_without_saving(tmp_path, cache):
    out = tmp_path / "run"
    proc = _start(out, cache)
    _wait_for_steps(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    # Two signals pending at once merge into one: send the second once the first was handled.
    for line in proc.stdout:
        if line.startswith("[run] SIGTERM: saving a checkpoint at the next step boundary"):
            break
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM and "second SIGTERM: exiting now without saving" in log
    assert not list(out.glob("checkpoint-*"))  # an interrupted save never looks like a checkpoint
    assert newest_checkpoint(out)[0] is None


# ---------------------------------------------------------------------------------------------
# The census: every bad input refused before compute, in one line, output_dir unchanged


def _write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


def _corrupt_weight(ckpt: Path) -> None:
    """Set the first values of one tensor to NaN bytes (a bit flip on disk, a bad copy)."""
    path = ckpt / "model.safetensors"
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = next(k for k in header if ".layers.1.mlp" in k)
    start = 8 + n + header[key]["data_offsets"][0]
    raw[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))


def _recipe(tmp, text):
    return ["--config", _write(tmp / "r.yaml", text)]


# (id, base output_dir: fresh | finished | killed, extra argv builder (tmp, out) -> list, message fragment, setup)
CENSUS = [
    # recipes
    ("empty recipe file", "fresh", lambda t, o: _recipe(t, "# nothing\n"), "recipe r.yaml: the file is empty", None),
    ("duplicate yaml key", "fresh", lambda t, o: _recipe(t, f"base: {TINY}\ngrowth: {{init: zero}}\ngrowth: {{init: copy}}\n"),
     "recipe r.yaml: line 3: not valid YAML: duplicate key 'growth'", None),
    ("yaml syntax", "fresh", lambda t, o: _recipe(t, "model: {hidden_size: 32\n"), "recipe r.yaml: line 2: not valid YAML", None),
    ("recipe is a list", "fresh", lambda t, o: _recipe(t, "- 1\n"), "expected a mapping at the top, got list", None),
    ("missing config", "fresh", lambda t, o: ["--config", str(t / "nope.yaml")], "nope.yaml' does not exist", None),
    ("binary config", "fresh", lambda t, o: ["--config", _write(t / "r.yaml", b"\xff\xfe\x00")], "recipe r.yaml: not a text file", None),
    ("beta with init copy", "fresh", lambda t, o: ["--growth.beta", "0.5"],
     "growth.beta: 0.5 is only used by growth.init scaled_copy, got init 'copy'", None),
    ("negative batch size", "fresh", lambda t, o: ["--per_device_train_batch_size", "-4"],
     "training.per_device_train_batch_size: must be positive, got -4", None),
    ("negative learning rate", "fresh", lambda t, o: ["--learning_rate", "-1e-3"], "training.learning_rate: must be >= 0, got -0.001", None),
    ("nan learning rate", "fresh", lambda t, o: ["--learning_rate", ".nan"], "training.learning_rate: must be a finite number", None),
    ("adam beta2 above 1", "fresh", lambda t, o: ["--adam_beta2", "1.5"], "training.adam_beta2: must be in [0, 1), got 1.5", None),
    ("zero grad accumulation", "fresh", lambda t, o: ["--gradient_accumulation_steps", "0"],
     "training.gradient_accumulation_steps: must be positive, got 0", None),
    ("negative seed", "fresh", lambda t, o: ["--seed", "-1"], "seed: must be in [0, 2**32), got -1", None),
    ("unknown field", "fresh", lambda t, o: ["--growth.operatr", "stack_all"], "growth.operatr: unknown key (did you mean 'operator'?)", None),
    ("bad nonfinite_loss_steps", "fresh", lambda t, o: ["--safety.nonfinite_loss_steps", "-1"],
     "safety.nonfinite_loss_steps must be a non-negative integer, got -1", None),
    ("no held-out data but evaluation on", "fresh", lambda t, o: ["--data.validation_fraction", "0"],
     "data.validation_fraction: 0 holds out no evaluation data", None),
    ("growth in tokens past the end", "fresh",
     lambda t, o: ["--growth.schedule", "{initial_depth: 2, unit: tokens, points: [[256, 4], [100000, 6]]}"],
     "growth.schedule.points[1]: 100000.0 tokens lands at step 782, which is not before max_steps 8", None),
    ("growth in flops past the end", "fresh",
     lambda t, o: ["--growth.schedule", "{initial_depth: 2, unit: flops, points: [[1.0e7, 4], [1.0e15, 6]]}"],
     "growth.schedule.points[1]: 1000000000000000.0 flops lands at step", None),
    # data (messages from growth/data.py)
    ("empty jsonl", "fresh", lambda t, o: ["--data.source", _write(t / "empty.jsonl", "")], "empty.jsonl' is empty", None),
    ("binary txt", "fresh", lambda t, o: ["--data.source", _write(t / "bin.txt", b"abc\x00\x01\x02" * 100)],
     "bin.txt' is not text", None),
    ("malformed json line", "fresh",
     lambda t, o: ["--data.source", _write(t / "bad.jsonl", '{"text": "fine"}\n{"text": "oops\n')], "bad.jsonl' line 2: malformed JSON", None),
    ("empty corpus", "fresh", lambda t, o: ["--data.source", _write(t / "blank.txt", "\n\n\n")], "no training text", None),
    ("missing column", "fresh", lambda t, o: ["--data.source", _write(t / "c.jsonl", '{"content": "x"}\n')],
     "data.text_field: column 'text' not in", None),
    ("missing data file", "fresh", lambda t, o: ["--data.source", str(t / "nope.txt")], "data.source: file", None),
    ("hub dataset offline", "fresh", lambda t, o: ["--data.source", "hf:someone/some-corpus"],
     "data.source: could not load hub dataset 'someone/some-corpus'", "offline"),
    ("model path missing", "fresh", lambda t, o: ["--model.name_or_path", str(t / "no-model"), "--model.family", "null",
                                                  "--growth.schedule", "null"], "model.name_or_path: cannot load", None),
    # output_dir and resume
    ("non-empty output_dir", "finished", lambda t, o: [], "is not empty", None),
    ("output_dir is a file", "fresh", lambda t, o: ["--output_dir", _write(t / "file", "x")], "exists and is not a directory", None),
    ("resume path typo", "finished", lambda t, o: ["--resume_from_checkpoint", str(o / "checkpoint-9")],
     "checkpoint-9' does not exist (found there: checkpoint-4, checkpoint-8)", None),
    ("resume from the run dir", "finished", lambda t, o: ["--resume_from_checkpoint", str(o)], "is a run directory, not a checkpoint", None),
    ("resume true without checkpoints", "fresh", lambda t, o: ["--resume_from_checkpoint", "true"], "no complete checkpoint in output_dir", None),
    ("resume and overwrite", "finished", lambda t, o: ["--resume_from_checkpoint", "true", "--overwrite_output_dir", "true"],
     "choose one", None),
    ("overwrite flag not a bool", "finished", lambda t, o: ["--overwrite_output_dir", "maybe"], "expected true or false, got 'maybe'", None),
    ("overwrite, then bad data", "finished", lambda t, o: ["--overwrite_output_dir", "true", "--data.source", _write(t / "e.jsonl", "")],
     "e.jsonl' is empty", None),
    ("truncated weights", "killed", lambda t, o: ["--resume_from_checkpoint", str(o / "checkpoint-4")],
     "is not a complete checkpoint: model.safetensors: truncated", "truncate model.safetensors"),
    ("truncated trainer_state", "killed", lambda t, o: ["--resume_from_checkpoint", "true"],
     "skipped checkpoint-4 (trainer_state.json is unreadable", "truncate trainer_state.json"),
    ("truncated optimizer", "killed", lambda t, o: ["--resume_from_checkpoint", str(o / "checkpoint-4")],
     "optimizer.pt is truncated", "truncate optimizer.pt"),
    ("missing weights", "killed", lambda t, o: ["--resume_from_checkpoint", str(o / "checkpoint-4")],
     "no model weights", "remove model.safetensors"),
    ("different width", "killed", lambda t, o: ["--resume_from_checkpoint", "true", "--model.hidden_size", "64"],
     "model.hidden_size (32 -> 64)", None),
    ("different vocab", "killed", lambda t, o: ["--resume_from_checkpoint", "true", "--tokenizer.vocab_size", "400"],
     "tokenizer.vocab_size (300 -> 400)", None),
    ("different width, override", "killed",
     lambda t, o: ["--resume_from_checkpoint", "true", "--model.hidden_size", "64", "--allow_recipe_change", "true"],
     "checkpoint-4/config.json: hidden_size is 32, the recipe's model has 64", None),
    ("different schedule, override", "killed",
     lambda t, o: ["--resume_from_checkpoint", "true", "--growth.schedule.points", "[[0.75, 4], [0.875, 6]]",
                   "--allow_recipe_change", "true"],
     "checkpoint-4/config.json: 6 layers, but the recipe's schedule is at depth 2 at step 4", None),
    ("corrupted weight bytes", "killed", lambda t, o: ["--resume_from_checkpoint", "true"],
     "checkpoint-4/model.safetensors: tensor model.layers.1.mlp", "corrupt"),
]


@pytest.mark.parametrize("case", CENSUS, ids=[c[0] for c in CENSUS])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, finished, killed, tmp_path, cache, capsys, monkeypatch):
    name, base, extra, fragment, setup = case
    out = tmp_path / "run"
    if base != "fresh":
        shutil.copytree(finished if base == "finished" else killed, out)
    if setup == "corrupt":
        _corrupt_weight(out / "checkpoint-4")
    elif setup and setup.startswith("truncate "):
        path = out / "checkpoint-4" / setup.split()[1]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif setup and setup.startswith("remove "):
        (out / "checkpoint-4" / setup.split()[1]).unlink()
    elif setup == "offline":
        import datasets
        import huggingface_hub

        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = argv(out, cache, *extra(tmp_path, out))  # a row's own --config comes last and wins
    before = tree_hash(out)
    rc = main(args)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert fragment in lines[0], lines[0]
    assert tree_hash(out) == before


@pytest.mark.parametrize("unit,points", [("tokens", "[[256, 4], [100000, 6]]"), ("flops", "[[1.0e7, 4], [1.0e15, 6]]")])
def test_schedule_past_the_end_refused_before_data_is_prepared(unit, points, tmp_path, capsys):
    """Growth points in tokens / FLOPs resolve to steps from the recipe alone: a point past the end
    is refused once the tokenizer exists, before the corpus is tokenized and packed (on a real
    corpus that is hours, not seconds)."""
    cache = tmp_path / "cache"
    rc = main(argv(tmp_path / "run", str(cache), "--growth.schedule", f"{{initial_depth: 2, unit: {unit}, points: {points}}}"))
    err = capsys.readouterr().err
    assert rc == 2 and f"growth.schedule.points[1]: " in err and "max_steps 8" in err, err[-2000:]
    assert list(cache.glob("tokenizer-*")) and not list(cache.glob("blocks-*")) and not list(cache.glob(".blocks-*"))
