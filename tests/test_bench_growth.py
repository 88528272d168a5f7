import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

import growth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench_growth.py")
TINY = ["--hidden", "64", "--heads", "4", "--layers", "2", "--target", "5", "--vocab", "128", "--seq-len", "16"]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_growth", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_clones_exactly_what_growth_creates():
    bench = load_bench()
    args = bench.parse_args(TINY)
    model, opt, batch = bench.build(args, args.layers)
    bench.train_step(model, opt, batch)
    floor = bench.created_tensors(model, opt, args.target)
    before = {id(p) for p in model.parameters()}

    growth.grow(model, args.target, optimizer=opt)

    new = [p for p in model.parameters() if id(p) not in before]
    created = new + [v for p in new for v in opt.state[p].values() if torch.is_tensor(v)]
    assert len(new) == 3 * len(list(growth.family_of(model).layers(model)[0].parameters()))
    assert len(floor) == len(created)
    assert sum(t.numel() * t.element_size() for t in floor) == sum(t.numel() * t.element_size() for t in created)


def test_parse_args_rejects_shrinking():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--layers", "4", "--target", "4"])


@pytest.mark.slow
def test_script_prints_ratios_and_verdicts():
    done = subprocess.run([sys.executable, SCRIPT, *TINY, "--repeats", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    time_ratio = re.search(r"grow / clone floor\s+([\d.]+)\s+(PASS|FAIL)", out)
    memory_ratio = re.search(r"peak grown / fresh, total\s+([\d.]+)\s+(PASS|FAIL)", out)
    assert time_ratio and memory_ratio, out
    assert float(time_ratio.group(1)) > 0
    # Both processes end holding the same 5-layer model, grads and AdamW state.
    assert "state tensors: grown" in out
    counts = re.search(r"state tensors: grown (\d+), fresh (\d+)", out)
    assert counts.group(1) == counts.group(2)
    assert re.search(r"peak grown / fresh, net\s+([\d.]+)\s+(PASS|FAIL)", out), out
    # A 0.3M-parameter model is ~5 MiB against a ~440 MiB runtime: the totals must nearly agree.
    assert 0.95 < float(memory_ratio.group(1)) < 1.05
