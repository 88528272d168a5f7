"""Benchmark one depth growth of a ~50-100M-parameter llama with its AdamW state.

Two ratios, measured in one run:

* time: ``growth.grow(model, target, optimizer=opt)`` against the physical floor, a
  ``torch.clone`` of exactly the tensors growth has to create (the source layers' parameters and
  their AdamW state), tensor by tensor. Target: growth within 3x the floor.
* memory: peak RSS of a process that builds the old depth, trains a step, grows and trains a step,
  against a process that builds the new depth fresh and trains two steps (same batch). Each runs
  in its own subprocess (this script re-invoked with ``--child``), so one's allocations cannot
  hide in the other's high-water mark; both run before the timing, which then has the machine.
  Target: within 5% of the fresh model, judged on the memory above the runtime baseline (torch,
  transformers and lazily loaded kernels: the stricter reading) and on the total.

The exit code is 0 whatever the result (it is a benchmark); a missed target is printed as FAIL.
``--json PATH`` writes the ratios in the benchmark convention read by ``scripts/bench.py``;
``--smoke`` runs tiny sizes (seconds) to check that the script works, not to measure.

Examples (the default: hidden 512, 6 -> 12 layers, vocab 32000, 52M -> 71M parameters; about 75 s
of CPU time, the wall time depends on how busy the cores are):
    python scripts/bench_growth.py
    python scripts/bench_growth.py --hidden 640 --layers 6 --target 12 --repeats 7
    python scripts/bench_growth.py --json out/bench_growth.json
    python scripts/bench_growth.py --smoke
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import transformers  # noqa: E402, F401  (part of the import baseline every process pays)

import growth  # noqa: E402
from growth.models import ModelConfig, build_model  # noqa: E402
from growth.operators import original_positions  # noqa: E402

TIME_TARGET = 3.0
MEMORY_TARGET = 1.05


def _rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (Linux: ru_maxrss is in KiB)."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    # The kernel updates the high-water mark lazily, so it can trail the current RSS by a little.
    return current, max(current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)


def build(args, depth: int):
    """Model of ``depth`` layers, AdamW with decay / no-decay groups, and a fixed tiny batch."""
    torch.manual_seed(0)
    cfg = ModelConfig(family="llama", hidden_size=args.hidden, num_layers=depth, num_heads=args.heads,
                      max_position_embeddings=args.seq_len)
    model = build_model(cfg, args.vocab, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    batch = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(1))
    return model, opt, batch


def train_step(model, opt, batch) -> None:
    model(input_ids=batch, labels=batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)  # what Trainer and most loops do, so grads are gone between steps


def created_tensors(model, opt, depth: int) -> list:
    """The tensors growth to ``depth`` copies: each added layer's source parameters and their state."""
    old = growth.family_of(model).layers(model)
    mapping = growth.plan(model, depth)
    kept = set(original_positions(mapping, len(old)))
    tensors = []
    for i, src in enumerate(mapping):
        if i in kept:  # old layers move, they are not copied
            continue
        for p in old[src].parameters():
            tensors.append(p.detach())
            tensors.extend(v for v in opt.state[p].values() if torch.is_tensor(v))
    return tensors


def bench_time(args) -> dict:
    model, opt, batch = build(args, args.layers)
    train_step(model, opt, batch)
    tensors = created_tensors(model, opt, args.target)
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    grow_s, floor_s, big_s = [], [], []
    for r in range(-1, args.repeats):  # repeat -1 warms the allocator and the VM's pages; discarded
        m, o = copy.deepcopy((model, opt))  # outside the timed region; one shared memo keeps params and state aligned
        src = created_tensors(m, o, args.target)
        flat = torch.empty(nbytes, dtype=torch.uint8)  # the same bytes as one buffer: one allocation, one memcpy
        gc.collect()

        def timed_floor():
            t0 = time.perf_counter()
            clones = [t.clone() for t in src]
            floor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            big = flat.clone()
            big_s.append(time.perf_counter() - t0)
            del clones, big

        def timed_grow():
            t0 = time.perf_counter()
            growth.grow(m, args.target, optimizer=o)
            grow_s.append(time.perf_counter() - t0)

        # Alternate the order: whichever runs second may reuse pages the allocator kept from the first.
        for step in ((timed_floor, timed_grow) if r % 2 == 0 else (timed_grow, timed_floor)):
            step()
            gc.collect()
        assert len(growth.family_of(m).layers(m)) == args.target
        del m, o, src, flat
        gc.collect()
        if r < 0:
            for runs in (grow_s, floor_s, big_s):
                runs.clear()
    return {"bytes": nbytes, "tensors": len(tensors), "grow_s": grow_s, "floor_s": floor_s, "flat_s": big_s,
            "params_old": sum(p.numel() for p in model.parameters())}


def child(args) -> None:
    """One memory measurement in this process; prints one JSON line."""
    out = {"import": _rss_mib()}
    # Baseline: a tiny model trained one step and grown, so that lazily loaded modules and kernels
    # (~150 MiB) count as runtime, not as the model's memory, in both processes alike.
    tiny = argparse.Namespace(**{**vars(args), "hidden": 32, "heads": 2, "vocab": 64, "batch": 1, "seq_len": 8})
    model, opt, batch = build(tiny, 1)
    train_step(model, opt, batch)
    growth.grow(model, 2, optimizer=opt)
    train_step(model, opt, batch)
    del model, opt, batch
    gc.collect()
    out["runtime"] = _rss_mib()
    if args.child == "grow":
        model, opt, batch = build(args, args.layers)
        train_step(model, opt, batch)
        out["old_step"] = _rss_mib()
        growth.grow(model, args.target, optimizer=opt)
        out["grown"] = _rss_mib()
        gc.collect()
        out["grown_gc"] = _rss_mib()
        train_step(model, opt, batch)
        out["new_step"] = _rss_mib()
    else:
        model, opt, batch = build(args, args.target)
        train_step(model, opt, batch)
        out["new_step"] = _rss_mib()
        train_step(model, opt, batch)
        out["new_step2"] = _rss_mib()
    out["params"] = sum(p.numel() for p in model.parameters())
    out["state_tensors"] = sum(len(s) for s in opt.state.values())
    print(json.dumps(out))


def run_children(args, modes: tuple[str, ...]) -> list[dict]:
    """Run the memory measurements side by side: peak RSS is per process, so they cannot see
    each other, and the wall time halves when the machine has the cores."""
    flags = ["--hidden", str(args.hidden), "--heads", str(args.heads), "--layers", str(args.layers), "--target",
             str(args.target), "--vocab", str(args.vocab), "--batch", str(args.batch), "--seq-len", str(args.seq_len)]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", mode, *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for mode in modes]
    results = []
    for mode, proc in zip(modes, procs):
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"--child {mode} failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def verdict(ratio: float, target: float) -> str:
    return f"PASS (target <= {target:g})" if ratio <= target else f"FAIL: target <= {target:g} MISSED"


def status(ratio: float, target: float, noise: float | None) -> str:
    """PASS / FAIL against ``ratio <= target``; NOISE where the miss is within the repeat-to-repeat spread."""
    if ratio <= target:
        return "PASS"
    return "NOISE" if noise is not None and ratio <= target * (1 + noise) else "FAIL"


def spread(values: list[float]) -> float | None:
    """Relative spread (max - min) / median of repeated measurements; None from one."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else None


def main(args) -> dict:
    grown, fresh = run_children(args, ("grow", "fresh"))
    t = bench_time(args)

    print(f"llama hidden {args.hidden}, heads {args.heads}, vocab {args.vocab}, fp32 CPU, "
          f"{args.layers} -> {args.target} layers: {t['params_old'] / 1e6:.1f}M -> {fresh['params'] / 1e6:.1f}M parameters, "
          f"AdamW (2 groups), batch {args.batch}x{args.seq_len}, torch threads {torch.get_num_threads()}")

    g, f, b = (statistics.median(t[k]) for k in ("grow_s", "floor_s", "flat_s"))
    # Each repeat times growth and floor back to back; the median of their ratios cancels the
    # drift between repeats (other processes, page faults) that a ratio of medians would keep.
    ratio = statistics.median(x / y for x, y in zip(t["grow_s"], t["floor_s"]))
    ratio_flat = statistics.median(x / y for x, y in zip(t["grow_s"], t["flat_s"]))
    print(f"\ntime, median of {args.repeats} (all runs in ms)")
    print(f"  growth.grow                     {g * 1e3:8.1f}   {' '.join(f'{x * 1e3:.1f}' for x in t['grow_s'])}")
    print(f"  floor: clone {t['tensors']:4d} tensors        {f * 1e3:8.1f}   {' '.join(f'{x * 1e3:.1f}' for x in t['floor_s'])}")
    print(f"  (one flat clone, same bytes)    {b * 1e3:8.1f}   {' '.join(f'{x * 1e3:.1f}' for x in t['flat_s'])}")
    print(f"  per-repeat grow / floor: {' '.join(f'{x / y:.2f}' for x, y in zip(t['grow_s'], t['floor_s']))}")
    print(f"  bytes created: {t['bytes'] / 2**20:.1f} MiB (new layers' parameters + exp_avg + exp_avg_sq + step)")

    i0 = max(grown["runtime"][1], fresh["runtime"][1])
    rows = [("grow: import torch, transformers, growth", grown["import"]),
            ("grow: runtime baseline (tiny model step+grow)", grown["runtime"]),
            (f"grow: {args.layers} layers + step", grown["old_step"]),
            ("grow: after growth.grow", grown["grown"]),
            ("grow: after gc.collect", grown["grown_gc"]),
            (f"grow: after step at {args.target} layers", grown["new_step"]),
            ("fresh: runtime baseline", fresh["runtime"]),
            (f"fresh {args.target} layers: after step 1", fresh["new_step"]),
            ("fresh: after step 2", fresh["new_step2"])]
    print("\nmemory, MiB (grow and fresh in separate processes)  current      peak")
    for name, (cur, peak) in rows:
        print(f"  {name:48s} {cur:9.1f} {peak:9.1f}")
    pg, pf = grown["new_step"][1], fresh["new_step2"][1]
    total, net = pg / pf, (pg - i0) / (pf - i0)
    print(f"  state tensors: grown {grown['state_tensors']}, fresh {fresh['state_tensors']}")

    print("\nratios")
    print(f"  time   grow / clone floor           {ratio:6.2f}  {verdict(ratio, TIME_TARGET)}  (median of per-repeat ratios)")
    print(f"  time   grow / one flat clone        {ratio_flat:6.2f}  (information: one allocation, one memcpy)")
    print(f"  memory peak grown / fresh, net      {net:6.3f}  {verdict(net, MEMORY_TARGET)}  (above the runtime baseline {i0:.0f} MiB)")
    print(f"  memory peak grown / fresh, total    {total:6.3f}  {verdict(total, MEMORY_TARGET)}")

    per_repeat = [x / y for x, y in zip(t["grow_s"], t["floor_s"])]
    noise = spread(per_repeat)
    shape = (f"llama hidden {args.hidden}, {args.layers} -> {args.target} layers, "
             f"{t['params_old'] / 1e6:.1f}M -> {fresh['params'] / 1e6:.1f}M params, AdamW, fp32 CPU")
    return {"name": "bench_growth", "command": " ".join(["python scripts/bench_growth.py", *sys.argv[1:]]), "results": [
        {"metric": "growth time / clone floor", "value": ratio, "target": f"<= {TIME_TARGET:g}",
         "status": status(ratio, TIME_TARGET, noise), "noise": noise,
         "note": f"median of {args.repeats} per-repeat ratios; growth {g * 1e3:.1f} ms, floor {f * 1e3:.1f} ms "
                 f"({t['bytes'] / 2**20:.1f} MiB in {t['tensors']} tensors); {shape}"},
        {"metric": "growth time / one flat clone", "value": ratio_flat, "target": None, "status": "INFO", "noise": None,
         "note": "one allocation and one memcpy of the same bytes: the physical floor"},
        {"metric": "peak RSS grown / fresh, net of runtime", "value": net, "target": f"<= {MEMORY_TARGET:g}",
         "status": status(net, MEMORY_TARGET, None), "noise": None,
         "note": f"above the runtime baseline of {i0:.0f} MiB; grown {pg:.0f} MiB, fresh {pf:.0f} MiB peak"},
        {"metric": "peak RSS grown / fresh, total", "value": total, "target": f"<= {MEMORY_TARGET:g}",
         "status": status(total, MEMORY_TARGET, None), "noise": None,
         "note": "separate processes: old depth + step + grow + step, against the new depth fresh + 2 steps"},
    ]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("):\n", 1)[1])
    p.add_argument("--hidden", type=int, default=512, help="hidden size (default 512)")
    p.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    p.add_argument("--layers", type=int, default=6, help="depth before growth (default 6)")
    p.add_argument("--target", type=int, default=12, help="depth after growth (default 12)")
    p.add_argument("--vocab", type=int, default=32000, help="vocabulary size (default 32000)")
    p.add_argument("--repeats", type=int, default=5, help="timed growths and floor clones (default 5)")
    p.add_argument("--batch", type=int, default=1, help="training batch size (default 1)")
    p.add_argument("--seq-len", type=int, default=32, help="training sequence length (default 32)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (the scripts/bench.py convention)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the script works (seconds)")
    p.add_argument("--child", choices=("grow", "fresh"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.hidden, args.heads, args.layers, args.target, args.vocab, args.seq_len, args.repeats = 64, 4, 2, 5, 128, 16, 2
    if not 1 <= args.layers < args.target:
        p.error(f"--target {args.target} must be larger than --layers {args.layers} (and --layers positive)")
    if args.repeats < 1:
        p.error(f"--repeats must be positive, got {args.repeats}")
    return args


if __name__ == "__main__":
    args = parse_args()
    if args.child:
        child(args)
    else:
        report = main(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
