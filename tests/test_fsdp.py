"""FSDP2 (torch ``fully_shard``) growth across 2 processes (gloo, CPU), through the real Trainer.

Both routes a user takes: an accelerate config (recipes/accelerate/fsdp2.yaml) and the Trainer's
own ``fsdp`` / ``fsdp_config`` arguments. The bar is the other backends': losses within 1e-4 of
one process, ranks identical after each growth; plus what makes it FSDP: every parameter a
DTensor of which each rank holds 1/N, growth events that move 0 bytes between ranks, sharded
checkpoints that resume across growth, and a final HF checkpoint at the grown depth."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")
pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def _env(**env):
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in env.items()}}


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(out, config="fsdp2", expect_ok=True, **env):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           os.path.join(ROOT, "recipes", "accelerate", f"{config}.yaml"), "--num_processes", "2",
           "--main_process_port", _port(), WORKER, str(out), "none"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    if not expect_ok:
        return proc.returncode, log
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2)], log


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    proc = subprocess.run([sys.executable, WORKER, str(out), "none"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.load(open(out / "rank0.json"))


def _rel(a, b):
    return abs(a - b) / abs(a)


def _same_losses(single, run, steps, tol=1e-4):
    for step in steps:
        assert _rel(single["loss"][step], run["loss"][step]) < tol, (step, single["loss"][step], run["loss"][step])


def test_fsdp2_accelerate_config_shards_grows_without_communication(single, tmp_path):
    """recipes/accelerate/fsdp2.yaml: sharded for real, same losses as one process, 0-byte growth."""
    (r0, r1), log = launch(tmp_path)
    assert log.count("[growth] step") == 2 and r0["fsdp"] and r0["depth"] == r1["depth"] == 4
    _same_losses(single, r0, single["loss"])
    for step, norm in single["grad_norm"].items():
        assert _rel(norm, r0["grad_norm"][step]) < 1e-4, step
    for step in ("3", "5"):  # right after each growth: ranks agree exactly, and with one process
        assert r0["snap"][step] == r1["snap"][step]
        for name, value in single["snap"][step].items():
            assert abs(value - r0["snap"][step][name]) <= 1e-4 * max(1.0, abs(value)), (step, name)
        # each rank holds its half of every parameter (row-sharded; uneven rows differ by one)
        (local0, total), (local1, total1) = r0["sharding"][step], r1["sharding"][step]
        assert total == total1 and local0 + local1 == total
        assert abs(local0 - total / 2) <= 0.01 * total / 2 and abs(local1 - total / 2) <= 0.01 * total / 2
    assert r0["final"] == r1["final"]
    # the growth events moved nothing between ranks; the same counter sees FSDP's own all-gathers
    for rank in (r0, r1):
        assert [(c["sent"], c["received"]) for c in rank["comm"]] == [(0, 0), (0, 0)]
        assert all(b > 0 for b in rank["gather_bytes"].values())


def test_fsdp2_fresh_optimizer_state_is_the_single_process_one(single, tmp_path):
    """optimizer_state fresh: new parameters restart Adam (no state, step 0) under FSDP2 as on one
    process (ZeRO refuses it by name: tests/test_zero_growth.py). A different policy (zero moments
    with the old step count: another bias correction) changes the losses after the first growth."""
    env = {"GROWTH_TEST_OPTIMIZER_STATE": "fresh"}
    proc = subprocess.run([sys.executable, WORKER, str(tmp_path / "single"), "none"], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.load(open(tmp_path / "single" / "rank0.json"))
    # the policy matters here: after the first growth (step 3) fresh and copy states train differently
    assert any(_rel(single["loss"][s], fresh["loss"][s]) > 1e-4 for s in fresh["loss"] if int(s) > 3)
    (r0, r1), _ = launch(tmp_path / "fsdp", **env)
    assert r0["fsdp"] and r0["depth"] == 4
    _same_losses(fresh, r0, fresh["loss"])
    _same_losses(fresh, r1, fresh["loss"])


def test_fsdp2_trainer_arguments_resume_from_sharded_checkpoint(single, tmp_path):
    """TrainingArguments(fsdp=..., fsdp_config={"version": 2, ...}): a sharded checkpoint taken after
    a growth resumes (the model is grown to the checkpoint's depth first) and continues the losses."""
    out = tmp_path / "run"
    (r0, _), _ = launch(out, "ddp", GROWTH_TEST_FSDP_ARGS=1, GROWTH_TEST_SAVE_STEPS=4, GROWTH_TEST_STOP_AT=4)
    assert r0["fsdp"] and r0["global_step"] == 4
    _same_losses(single, r0, ("1", "2", "3", "4"))
    ckpt = out / "checkpoint-4"
    assert json.load(open(ckpt / "config.json"))["num_hidden_layers"] == 3
    shards = sorted(os.listdir(ckpt / "pytorch_model_fsdp_0"))
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"], shards  # one shard file per rank
    assert os.path.isdir(ckpt / "optimizer_0")
    assert not any(os.path.exists(ckpt / f) for f in ("model.safetensors", "pytorch_model.bin", "optimizer.pt"))
    (r0, r1), log = launch(out, "ddp", GROWTH_TEST_FSDP_ARGS=1, GROWTH_TEST_RESUME=str(ckpt))
    assert log.count("[growth] step 5: depth 3 -> 4") == 1
    assert r0["depth"] == 4 and r0["global_step"] == 8 and r0["final"] == r1["final"]
    _same_losses(single, r0, ("5", "6", "7", "8"))
    for name, value in single["final"].items():
        assert abs(value - r0["final"][name]) <= 1e-4 * max(1.0, abs(value)), name


def test_fsdp2_bf16_mixed_precision_across_growth(single, tmp_path):
    """bf16 (FSDP2's MixedPrecisionPolicy): the new blocks get the same policy as the old, ranks
    agree exactly, and the losses track the fp32 single-process run."""
    (r0, r1), log = launch(tmp_path, GROWTH_TEST_BF16=1)
    assert log.count("[growth] step") == 2 and r0["depth"] == 4
    assert r0["mp_param_dtypes"] == ["torch.bfloat16"]  # every FSDP unit, the grown ones included
    assert r0["snap"] == r1["snap"] and r0["final"] == r1["final"]
    _same_losses(single, r0, single["loss"], tol=1e-2)


def test_fsdp_that_does_not_engage_fails_loudly(tmp_path):
    """Without the CPU shim accelerate drops the FSDP plugin on CPU and the Trainer would train plain
    DDP: the run must stop, naming FSDP, before the first step."""
    code, log = launch(tmp_path, expect_ok=False, GROWTH_TEST_NO_SHIM=1)
    assert code != 0
    assert "RuntimeError: FSDP was requested (accelerate config or --fsdp) but the Trainer runs DistributedType.MULTI_CPU" in log
    assert "'loss'" not in log  # no step was taken


def test_train_script_under_accelerate_fsdp2(tmp_path):
    """The issue's reproduction: `accelerate launch --config_file recipes/accelerate/fsdp2.yaml
    --num_processes 2 scripts/train.py --config recipes/tiny.yaml ... --use_cpu true`. Checkpoints
    are sharded now, and the final HF model equals the last sharded checkpoint bit for bit."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           os.path.join(ROOT, "recipes", "accelerate", "fsdp2.yaml"), "--num_processes", "2",
           "--main_process_port", _port(), os.path.join(ROOT, "scripts", "train.py"),
           "--config", "recipes/tiny.yaml", "--max_steps", "12", "--model.hidden_size", "32",
           "--data.max_train_bytes", "200000", "--data.max_eval_tokens", "2048", "--tokenizer.vocab_size", "512",
           "--data.cache_dir", str(tmp_path / "cache"), "--output_dir", str(out), "--use_cpu", "true",
           "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--save_steps", "6"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = proc.stdout + proc.stderr
    assert "[growth] step 3: depth 2 -> 4" in log and "[growth] step 6: depth 4 -> 6" in log
    events = [json.loads(line) for line in open(out / "growth_events.jsonl")]
    assert [(e["from_depth"], e["to_depth"]) for e in events] == [(2, 4), (4, 6)]
    last = out / "checkpoint-12"
    assert (last / "pytorch_model_fsdp_0" / "__1_0.distcp").exists() and not (last / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(out)  # the final model, gathered into HF format
    assert model.config.num_hidden_layers == 6 and sum(p.numel() for p in model.parameters()) == events[-1]["params"]
    dcp_to_torch_save(last / "pytorch_model_fsdp_0", tmp_path / "last.pt")  # no process group needed
    sharded = torch.load(tmp_path / "last.pt")["model"]
    final = model.state_dict()
    assert sharded.keys() == final.keys()
    assert all(torch.equal(sharded[k], final[k]) for k in final)
