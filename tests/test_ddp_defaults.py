"""DDP default: find_unused_parameters=False (growth/run.py). Every parameter is used before and
after growth, so the fast default must give the same losses as one process across growth events,
through the real training script under `accelerate launch` (2 processes, gloo)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from growth.recipe import load_recipe
from growth.run import training_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "recipes", "tiny.yaml")
# The smoke-sized tiny recipe (scripts/train.py --smoke): growth 2 -> 4 -> 6 after steps 2 and 4 of 8.
SMALL = ["--max_steps", "8", "--model.hidden_size", "32", "--data.block_size", "32", "--model.max_position_embeddings", "32",
         "--data.max_train_bytes", "200000", "--data.max_eval_tokens", "256", "--tokenizer.vocab_size", "512",
         "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true",
         "--use_cpu", "true"]
WARNING = "find_unused_parameters=True was specified in DDP constructor"


def test_default_is_false_and_a_recipe_can_turn_it_on(tmp_path):
    recipe = load_recipe(TINY, {"training.output_dir": str(tmp_path)})
    assert training_arguments(recipe).ddp_find_unused_parameters is False
    recipe = load_recipe(TINY, {"training.output_dir": str(tmp_path), "training.ddp_find_unused_parameters": True})
    assert training_arguments(recipe).ddp_find_unused_parameters is True


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(tmp_path, name, processes):
    out = tmp_path / name
    args = [os.path.join(ROOT, "scripts", "train.py"), "--config", TINY, *SMALL, "--output_dir", str(out),
            "--data.cache_dir", str(tmp_path / "cache"), "--per_device_train_batch_size", str(8 // processes)]
    if processes > 1:
        args = ["-m", "accelerate.commands.launch", "--config_file", os.path.join(ROOT, "recipes", "accelerate", "ddp.yaml"),
                "--num_processes", str(processes), "--main_process_port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    return {m["step"]: m for m in metrics if "loss" in m}, log


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_without_unused_parameter_search_matches_one_process_across_growth(tmp_path):
    single, _ = _train(tmp_path, "single", 1)
    ddp, log = _train(tmp_path, "ddp", 2)
    assert "[growth] step 2: depth 2 -> 4" in log and "[growth] step 4: depth 4 -> 6" in log
    assert WARNING not in log  # torch prints it on the first step when the search runs and finds nothing
    assert sorted(ddp) == sorted(single) == list(range(1, 9))
    assert [ddp[s]["depth"] for s in sorted(ddp)] == [2, 4, 4, 6, 6, 6, 6, 6]
    for step, row in single.items():  # same global batch of 8: 8 on one process, 4 + 4 under DDP
        assert abs(ddp[step]["loss"] - row["loss"]) <= 1e-4 * abs(row["loss"]), (step, row["loss"], ddp[step]["loss"])
        assert abs(ddp[step]["grad_norm"] - row["grad_norm"]) <= 1e-4 * abs(row["grad_norm"]), step
