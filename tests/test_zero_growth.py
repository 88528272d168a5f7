"""ZeRO growth without gathers (growth/deepspeed.py, GROWTH_DISTRIBUTED_COPY=local), on 2 processes.

One launch of tests/zero_worker.py grows a tiny llama 2 -> 4 under ZeRO-2 and ZeRO-3 with both copy
methods and several inits / state policies (and 2 -> 3 -> 4 -> 5 under ZeRO-1/2/3 for leaks), saving each rank's own state right after the event and
counting the event's bytes with growth.comm. The local copy must give bit-identical masters,
moments, steps and parameter partitions to the gather path, and the same losses after it; under
ZeRO-3 the event must move no byte at all (a reintroduced gather fails the test).
"""

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "zero_worker.py")
pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# stage:init:optimizer_state:method. scaled_copy (beta 0.5) gives copied and scaled weights,
# zero gives zeroed ones; "copy" / "zero" states give copied and zeroed moments.
PAIRS = ["3:scaled_copy:copy", "3:zero:zero", "2:scaled_copy:zero"]
LEAK_CASES = [f"{stage}:copy:copy:local:events3" for stage in (1, 2, 3)]
FROZEN_CASES = ["3:scaled_copy:copy:local:frozen", "3:scaled_copy:copy:gather:frozen", "2:scaled_copy:copy:local:frozen"]
CASES = ([f"{p}:{m}" for p in PAIRS for m in ("gather", "local")] + LEAK_CASES + FROZEN_CASES
         + ["3:copy:fresh:local", "ddp:copy:fresh:local"])


def _env():
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT,
            "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", os.path.join(ROOT, ".cache", "torch_extensions"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero_growth")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29600 + os.getpid() % 300), WORKER, str(out), *CASES]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    proc = subprocess.run([sys.executable, WORKER, str(out), "single:copy:fresh:local"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def load(out, case, rank):
    return torch.load(out / f"{case}.rank{rank}.pt", weights_only=False)


def assert_bit_equal(a, b, path="state"):
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_bit_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("pair", PAIRS)
def test_local_copy_bit_equal_to_gather(runs, pair):
    for rank in (0, 1):
        gather, local = load(runs, f"{pair}:gather", rank), load(runs, f"{pair}:local", rank)
        # every fp32 master partition, every moment and step, every bf16/fp32 parameter partition
        # (ZeRO-3: ds_tensor, and the full replica of persistent ones; ZeRO-2: the replicas)
        assert_bit_equal(gather["state"], local["state"])
        assert len(local["state"]["opt"][0]) == 3  # exp_avg, exp_avg_sq, step: the moments were compared
        assert gather["loss"] == local["loss"] and local["depth"] == 4  # and the steps after it agree
        # no leak across engine rebuilds: the old engine's masters, moments and flat buffers are freed
        # (the Trainer's loop keeps the old engine object; before growth/deepspeed._release dropped its
        # links, its whole state stayed alive)
        assert gather["old_tensors_alive_bytes"] == local["old_tensors_alive_bytes"] == 0
    # the two ranks hold different slices (the comparison is per rank, not of a replica)
    assert not torch.equal(load(runs, f"{pair}:local", 0)["state"]["flat"][0], load(runs, f"{pair}:local", 1)["state"]["flat"][0])


@pytest.mark.parametrize("pair", [p for p in PAIRS if p.startswith("3:")])
def test_zero3_growth_moves_no_bytes(runs, pair):
    for rank in (0, 1):
        local, gather = load(runs, f"{pair}:local", rank), load(runs, f"{pair}:gather", rank)
        # the whole event: rebuild and copies of copied, scaled and zeroed blocks
        assert all(p["sent"] == 0 and p["received"] == 0 for p in local["bytes"].values()), local["bytes"]
        # the counter does see the reference path's gathers (so 0 above is not a blind counter)
        assert gather["bytes"]["copy"]["received"] >= gather["fp32_bytes"] // 2


@pytest.mark.parametrize("case", LEAK_CASES)
def test_no_leak_across_three_engine_rebuilds(runs, case):
    """ZeRO-1/2/3, three growth events: after the last, nothing of the three replaced engines'
    optimizers (fp32 masters, Adam moments, flat weight buffers) is alive. DeepSpeed's engines and
    optimizers keep each other reachable from the old parameters (_z3_optimizer, _hp_mapping), so
    without growth/deepspeed._release every rebuild kept a full copy of the previous state, and
    accelerate's optimizer wrapper, which the Trainer's loop still holds, kept the old optimizer."""
    for rank in (0, 1):
        r = load(runs, case, rank)
        assert r["depth"] == 5 and r["events"] == 3 and len(r["loss"]) == 6
        assert r["old_optimizers_alive"] == []  # indices of the replaced engines' optimizers still reachable
        assert r["old_tensors_alive_bytes"] == 0


@pytest.mark.parametrize("case", FROZEN_CASES)
def test_frozen_parameter_stays_frozen_and_unchanged(runs, case):
    """A parameter outside the optimizer (frozen embedding: no fp32 master, no moments) keeps its
    values and its requires_grad across the rebuild (the grown model is built from its config, where
    every parameter is trainable; ZeRO-3's local copy skipped it, the gather path crashed on it)."""
    for rank in (0, 1):
        r = load(runs, case, rank)
        assert r.get("error") is None and r["depth"] == 4
        assert r["frozen_kept"] and r["frozen_after"] == ["model.embed_tokens.weight"]


def test_zero2_receives_at_most_its_partition(runs):
    for rank in (0, 1):
        local, gather = load(runs, "2:scaled_copy:zero:local", rank), load(runs, "2:scaled_copy:zero:gather", rank)
        partition = sum(f.numel() * f.element_size() for f in local["state"]["flat"])  # this rank's new fp32 masters
        received = sum(p["received"] for p in local["bytes"].values())
        assert 0 < received <= 3 * partition  # master + two moments of its own new partition, at most
        assert sum(p["received"] for p in gather["bytes"].values()) > 3 * partition


def test_fresh_optimizer_state_same_on_every_backend(runs):
    """`optimizer_state: fresh`: new parameters restart Adam (no state after growth, then their own
    step count) on one process and DDP alike; ZeRO, which shares one step per partition, refuses it
    by name before training."""
    single = load(runs, "single:copy:fresh:local", 0)
    for rank in (0, 1):
        ddp = load(runs, "ddp:copy:fresh:local", rank)
        for name, step in single["state"].items():  # right after the growth event
            assert ddp["state"][name] == step, name
            assert (step is None) == name.startswith(("model.layers.2.", "model.layers.3.")), name
        assert ddp["steps_at_end"] == single["steps_at_end"]
        assert single["steps_at_end"]["model.layers.3.mlp.up_proj.weight"] == 2.0  # 2 steps since growth, from 0
        assert single["steps_at_end"]["model.layers.0.mlp.up_proj.weight"] == 5.0
        for step, loss in single["loss"].items():
            assert abs(ddp["loss"][step] - loss) <= 1e-4 * abs(loss), step
        zero = load(runs, "3:copy:fresh:local", rank)
        assert "growth.optimizer_state" in zero["error"] and "'fresh'" in zero["error"] and "ZeRO" in zero["error"]
        assert "loss" not in zero
