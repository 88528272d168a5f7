"""Benchmark torch.compile and activation checkpointing across growth: a grown model against a
fresh model of the same depth, set up the way the Trainer integration does it (growth/compile.py).

Two ratios, measured in one run:

* throughput (compile): a llama of depth D/2 is compiled block by block, trains two steps, grows
  to D (stack_last, copies, AdamW state grown with it) and its new blocks are compiled; a fresh
  model of depth D is compiled the same way. Training steps (forward, backward, AdamW step) are
  timed in ABBA rounds (grown, fresh, fresh, grown, ...); the ratio is the grown model's steps
  per second over the fresh model's, the noise the spread of the per-round ratios. Target: within 5%.
* peak memory (activation checkpointing): the small model is checkpointed before growth (as the
  Trainer does once), grows, and its new blocks are checkpointed by the growth path; against a
  fresh checkpointed model of depth D. Peak memory of one training step: torch's MemTracker
  (CPU: the live tensor bytes, parameters, gradients, optimizer state and activations) or
  ``torch.cuda.max_memory_allocated`` (CUDA). The fresh model without checkpointing is measured
  too, to show that checkpointing matters at these sizes. Target: grown within 5% of fresh.

The machine may be shared: the load average is printed beside the timings. The exit code is 0
whatever the result (a benchmark); a missed target is printed as FAIL (NOISE when the spread of
the rounds is larger than the target). ``--json PATH`` writes the benchmark convention read by
scripts/bench.py; ``--smoke`` runs tiny sizes with the ``eager`` backend (seconds) to check the script.

Examples (the default: hidden 256, 4 -> 8 layers, batch 4 x 128 tokens, inductor; a few minutes on
2 busy CPU cores, most of it compiling):
    python scripts/bench_compile.py
    python scripts/bench_compile.py --device cuda --hidden 1024 --layers 8 --batch 8 --seq 1024
    python scripts/bench_compile.py --json out/bench_compile.json
    python scripts/bench_compile.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import growth  # noqa: E402
from growth.compile import checkpoint_blocks, checkpoint_function, compile_blocks, compiled_blocks  # noqa: E402
from growth.models import ModelConfig, build_model  # noqa: E402

TARGET = 0.05


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def make_model(a, depth: int, seed: int):
    torch.manual_seed(seed)
    cfg = ModelConfig(family="llama", hidden_size=a.hidden, num_layers=depth, num_heads=a.heads,
                      max_position_embeddings=a.seq)
    model = build_model(cfg, a.vocab).to(a.device).train()
    model.config.use_cache = False  # as the Trainer sets it (TrainingArguments.use_cache)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def step(model, opt, batch) -> None:
    model(input_ids=batch, labels=batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def grown_model(a, checkpointing: bool, compile_kwargs: dict | None, batch):
    """Depth D/2, (compiled / checkpointed), trained two steps, grown to D, new blocks set up as
    GrowingTrainerMixin._apply_block_settings does after each growth event."""
    model, opt = make_model(a, a.layers // 2, seed=0)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    if compile_kwargs is not None:
        compile_blocks(model, **compile_kwargs)
    for _ in range(2):
        step(model, opt, batch)
    growth.grow(model, a.layers, "stack_last", "copy", opt)
    if checkpointing:
        checkpoint_blocks(model, checkpoint_function(model), 1)
    if compile_kwargs is not None:
        compile_blocks(model, **compile_kwargs)
        assert all(compiled_blocks(model))
    return model, opt


def fresh_model(a, checkpointing: bool, compile_kwargs: dict | None, batch):
    model, opt = make_model(a, a.layers, seed=1)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    if compile_kwargs is not None:
        compile_blocks(model, **compile_kwargs)
    for _ in range(2):  # the same two steps: optimizer state allocated, graphs compiled
        step(model, opt, batch)
    return model, opt


def throughput(a, batch) -> dict:
    kwargs = {"backend": a.backend}
    t0 = time.perf_counter()
    models = {"grown": grown_model(a, False, kwargs, batch), "fresh": fresh_model(a, False, kwargs, batch)}
    print(f"[compile] set up (compiling included) in {time.perf_counter() - t0:.1f} s; {load()}", flush=True)
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    times = {"grown": [], "fresh": []}
    for r in range(a.rounds):
        for name in (("grown", "fresh") if r % 2 == 0 else ("fresh", "grown")):  # ABBA
            model, opt = models[name]
            sync(a.device)
            t = time.perf_counter()
            for _ in range(a.steps):
                step(model, opt, batch)
            sync(a.device)
            times[name].append((time.perf_counter() - t) / a.steps)
        print(f"[compile] round {r + 1}: grown {times['grown'][-1] * 1e3:.1f} ms/step, fresh "
              f"{times['fresh'][-1] * 1e3:.1f} ms/step; {load()}", flush=True)
    ratios = [f / g for g, f in zip(times["grown"], times["fresh"])]  # grown steps/s over fresh steps/s
    ratio = statistics.median(ratios)
    noise = (max(ratios) - min(ratios)) / 2 if len(ratios) > 1 else None
    return {"ratio": ratio, "noise": noise, "grown_ms": statistics.median(times["grown"]) * 1e3,
            "fresh_ms": statistics.median(times["fresh"]) * 1e3, "graphs": graphs,
            "graphs_after": counters["stats"]["unique_graphs"]}


def peak_memory(a, build, checkpointing: bool, batch) -> float:
    """Peak bytes of one training step of the model ``build`` returns (after its warm-up steps)."""
    model, opt = build(a, checkpointing, None, batch)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, batch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        from torch.distributed._tools.mem_tracker import MemTracker

        tracker = MemTracker()
        tracker.track_external(model, opt)
        with tracker:
            step(model, opt, batch)
        peak = sum(v.get("Total", 0) for v in tracker.get_tracker_snapshot("peak").values())
    del model, opt
    return float(peak)


def status(ratio: float, noise: float | None) -> str:
    if abs(ratio - 1) <= TARGET:
        return "PASS"
    return "NOISE" if noise is not None and noise > TARGET else "FAIL"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=8, help="depth D of both models (the grown one starts at D/2)")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--backend", default="inductor", help="torch.compile backend (the Trainer's torch_compile_backend)")
    p.add_argument("--rounds", type=int, default=4, help="timing rounds, alternating ABBA")
    p.add_argument("--steps", type=int, default=2, help="training steps per round and model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the results here (benchmark convention)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, eager backend: checks the script, measures nothing")
    a = p.parse_args(argv)
    if a.smoke:
        a.hidden, a.heads, a.layers, a.vocab, a.batch, a.seq = 32, 4, 4, 97, 2, 32
        a.backend, a.rounds, a.steps = "eager", 2, 1
    if a.layers < 2 or a.layers % 2:
        raise SystemExit(f"error: --layers must be an even depth >= 2, got {a.layers}")
    torch.manual_seed(0)
    batch = torch.randint(0, a.vocab, (a.batch, a.seq), device=a.device)
    print(f"[bench_compile] llama hidden {a.hidden}, {a.layers // 2} -> {a.layers} layers vs fresh {a.layers}, "
          f"batch {a.batch} x {a.seq}, backend {a.backend}, {a.device}, torch {torch.__version__}; {load()}", flush=True)

    mem = {"grown": peak_memory(a, grown_model, True, batch), "fresh": peak_memory(a, fresh_model, True, batch),
           "fresh, no checkpointing": peak_memory(a, fresh_model, False, batch)}
    mem_ratio = mem["grown"] / mem["fresh"]
    print("[checkpointing] peak memory of a training step: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in mem.items())
          + f"; grown / fresh {mem_ratio:.4f}; checkpointing keeps {mem['fresh'] / mem['fresh, no checkpointing']:.0%} "
          "of the peak without it", flush=True)

    tp = throughput(a, batch)
    print(f"[compile] grown / fresh throughput {tp['ratio']:.4f} (noise +-{tp['noise'] or 0:.4f}); grown "
          f"{tp['grown_ms']:.1f} ms/step, fresh {tp['fresh_ms']:.1f} ms/step; dynamo graphs {tp['graphs']} "
          f"after set-up, {tp['graphs_after']} after timing; {load()}", flush=True)

    results = [
        {"metric": "compile: grown / fresh training throughput, same depth", "value": tp["ratio"],
         "target": "within 5% of 1", "status": "INFO" if a.smoke else status(tp["ratio"], tp["noise"]),
         "noise": tp["noise"], "note": f"{a.backend}, {a.device}, {a.rounds} ABBA rounds x {a.steps} steps, grown "
                                        f"{tp['grown_ms']:.1f} / fresh {tp['fresh_ms']:.1f} ms per step; {load()}"},
        {"metric": "compile: dynamo graphs for both models at every depth", "value": float(tp["graphs_after"]),
         "target": None, "status": "INFO", "noise": None,
         "note": "block by block: new blocks reuse the graph traced for the first"},
        {"metric": "checkpointing: grown / fresh peak memory of a training step, same depth", "value": mem_ratio,
         "target": "within 5% of 1", "status": "INFO" if a.smoke else status(mem_ratio, None), "noise": None,
         "note": f"grown {mem['grown'] / 2**20:.1f} MiB, fresh {mem['fresh'] / 2**20:.1f} MiB, fresh without "
                 f"checkpointing {mem['fresh, no checkpointing'] / 2**20:.1f} MiB "
                 f"({'cuda max_memory_allocated' if a.device.startswith('cuda') else 'MemTracker, CPU'})"},
        {"metric": "checkpointing: checkpointed / not checkpointed peak memory, fresh model", "value":
         mem["fresh"] / mem["fresh, no checkpointing"], "target": None, "status": "INFO", "noise": None,
         "note": "how much checkpointing matters at these sizes"},
    ]
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"name": "compile", "command": " ".join(["python", "scripts/bench_compile.py", *(argv or sys.argv[1:])]),
                       "results": results}, f, indent=2)
    for r in results:
        print(f"{r['status']:5s} {r['metric']}: {r['value']:.4f}" + (f" (target {r['target']})" if r["target"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
