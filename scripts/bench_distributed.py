"""Benchmark growth inside one HF Trainer run, per distributed backend (single, DDP, ZeRO-1/2/3, FSDP2).

Two ratios per backend, all numbers from one run of this script:

* growth cost: the seconds of one growth event (``grow_now``: surgery, DDP re-wrap or DeepSpeed
  engine rebuild with its state moved) against the median time of one training step of the
  grown model.
* throughput: the median step time of the grown model against a fresh model built directly at
  the grown depth, trained by the same backend in the same process over the same number of steps.
  ``fresh / grown`` is the grown model's relative throughput; target >= 0.98.

Per backend, the driver launches this script in worker mode: plain python for ``single``,
``accelerate launch`` with 2 processes and ``recipes/accelerate/<backend>.yaml`` otherwise (on CPU:
gloo, and ``growth.distributed.cpu_distributed_shim`` for DeepSpeed and FSDP2). The worker runs the phases
grown, fresh, fresh, grown, ... (``--repeats`` pairs in ABBA order, so that a drift of the
machine's load over the run hits both sides alike) and times each optimizer step from
``on_step_begin`` to ``on_step_end`` (forward, backward, clipping, optimizer step; the growth runs
after that step's timer has stopped), in wall-clock and in this process's CPU seconds. The first
``--warmup`` steps after growth and of each fresh run are dropped on both sides (one-time costs:
DDP bucket building, ZeRO-3's prefetch trace). Timings are rank 0's; collectives keep the ranks in
step. From 2 repeats on, the spread between the medians of repeated phases of the same kind is
printed as the noise: a ratio within that spread of the target, on either side, is UNRESOLVED (NOISE in
docs/benchmarks.md), not PASS or FAIL.

* bytes: what one growth event sends and receives per rank (``growth.comm.count_bytes`` around
  ``grow_now``, split into the engine rebuild and the state copy), for each ``--copy`` method of
  ``growth/deepspeed.py``: ``local`` (slice-local copies; the default) and ``gather`` (the old
  ``safe_get_full_*`` / ``safe_set_full_*`` path); target under ZeRO-3: 0 bytes for the block
  copies; ZeRO-1/2: at most about the rank's new partition (master + moments), not the full model.
  FSDP2 (``fsdp2``, growth/fsdp.py: local shard copies in place): target 0 bytes for the whole event.
* memory (``--rss``): three growth events under the backend, then the process RSS against a fresh
  engine of the final depth started in its own processes; target within 5%.

The exit code is 0 whatever the result (it is a benchmark). ``--json PATH`` writes the results in
the scripts/bench.py convention; ``--smoke`` runs tiny sizes under ZeRO-3 (checks the script works).

Example (llama hidden 128, depth 2 -> 4 after step 3, seq 64, global batch 8, 1 torch thread per
process; about 3 minutes on 2 idle cores, more when the machine is shared):
    python scripts/bench_distributed.py --backends single,ddp,zero1,zero2,zero3 --steps 12 --out bench_distributed.json
    python scripts/bench_distributed.py --backends zero3 --steps 20 --repeats 4
    python scripts/bench_distributed.py --backends zero1,zero2,zero3 --num-processes 4 --copy gather,local --repeats 1
    python scripts/bench_distributed.py --backends zero1,zero2,zero3 --rss-only --layers 2 --target 8 --hidden 512 --vocab 4096
    python scripts/bench_distributed.py --backends fsdp2 --num-processes 2,4 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp2")
THROUGHPUT_TARGET = 0.98


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--steps", type=int, default=12, help="timed steps of the grown model, and of each fresh run")
    p.add_argument("--grow-at", type=int, default=3, help="optimizer step after which the model grows")
    p.add_argument("--warmup", type=int, default=2, help="steps dropped after growth and at the start of each fresh run")
    p.add_argument("--repeats", type=int, default=2,
                   help="grown/fresh pairs per backend, run in ABBA order; from 2 on, their spread estimates the noise")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="depth before growth")
    p.add_argument("--target", type=int, default=4, help="depth after growth (and of the fresh model)")
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences per optimizer step)")
    p.add_argument("--num-processes", default="2", help="processes for ddp / zero*; a list (2,4) runs each")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1: steadier timings on a shared CPU; ignored with a GPU)")
    p.add_argument("--copy", default="local,gather",
                   help="ZeRO copy methods whose bytes per growth event are counted (growth/deepspeed.py: local, gather); "
                        "the timed phases use the first")
    p.add_argument("--rss", action="store_true",
                   help="also: 3 growth events, then RSS against a fresh engine of the final depth (separate launches)")
    p.add_argument("--rss-only", action="store_true", help="only the --rss measurement (no throughput / bytes phases)")
    p.add_argument("--out", help="write the numbers as JSON here (all details)")
    p.add_argument("--json", metavar="PATH", help="write the results in the scripts/bench.py convention")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, ZeRO-3 only, one repeat: checks the script works")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # backend name: run the phases in this process
    p.add_argument("--result-dir", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="throughput", help=argparse.SUPPRESS)  # worker: throughput | rss-grown | rss-fresh
    args = p.parse_args(argv)
    if args.smoke and not args.worker:
        args.backends, args.steps, args.warmup, args.repeats, args.hidden, args.vocab = "zero3", 3, 1, 1, 32, 128
        args.num_processes, args.rss = "2", False
        args.seq_len, args.copy = 16, "local,gather"
    copies = [c for c in args.copy.split(",") if c]
    for c in copies:
        if c not in ("local", "gather"):
            raise ValueError(f"--copy: unknown method {c!r}; choose from local, gather")
    args.copy = copies or ["local"]
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"--backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    args.backends = backends
    if (args.rss or args.rss_only) and not args.worker and args.target - args.layers < 3:
        raise ValueError(f"--rss: three growth events need --target >= --layers + 3, got --layers {args.layers} "
                         f"--target {args.target}")
    args.procs = [int(n) for n in str(args.num_processes).split(",") if n]
    args.num_processes = args.procs[0]
    if min(args.procs, default=0) < 1:
        raise ValueError(f"--num-processes must be positive, got {args.procs}")
    for name in ("steps", "grow_at", "repeats", "hidden", "heads", "layers", "vocab", "seq_len", "batch", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.target <= args.layers:
        raise ValueError(f"--target {args.target} must be larger than --layers {args.layers}")
    if not 0 <= args.warmup < args.steps:
        raise ValueError(f"--warmup {args.warmup} must be in [0, --steps {args.steps})")
    for n in args.procs:
        if args.batch % n:
            raise ValueError(f"--batch {args.batch} is not divisible by --num-processes {n}")
    return args


# --- worker: runs inside each launched process ---------------------------------------------------
def worker(args) -> None:
    import gc

    import torch
    import transformers

    from growth.comm import count_bytes
    from growth.distributed import cpu_distributed_shim
    from growth.models import ModelConfig, build_model
    from growth.trainer import enable_growth

    backend = args.worker
    ds_config = os.path.join(REPO, "recipes", "accelerate", f"ds_{backend}.json") if backend.startswith("zero") else None
    fsdp = backend == "fsdp2"  # recipes/accelerate/fsdp2.yaml through the launcher
    cpu_distributed_shim(deepspeed=ds_config is not None, fsdp=fsdp)
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    n_samples = (args.grow_at + args.steps) * args.batch
    ids = torch.randint(0, args.vocab, (n_samples, args.seq_len), generator=g)
    data = [{"input_ids": row, "labels": row} for row in ids]

    class StepTimer(transformers.TrainerCallback):
        """Wall and CPU seconds of each optimizer step, by the global step it ends at."""

        def __init__(self):
            self.wall: dict[int, float] = {}
            self.cpu: dict[int, float] = {}

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.wall[state.global_step] = time.perf_counter() - self.start[0]
            self.cpu[state.global_step] = time.process_time() - self.start[1]

    extra_callbacks = []  # added to every phase's Trainer

    def model_numel(trainer) -> int:
        return sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters())

    def partition_numel(trainer) -> int:
        """Elements of this rank's fp32 master partitions (ZeRO) or shards (FSDP2), else of the whole model."""
        if fsdp:
            return sum(p.to_local().numel() for p in trainer.model.parameters())
        opt = getattr(trainer.model_wrapped, "optimizer", None)
        if ds_config and opt is not None:
            from growth.deepspeed import flat_partitions

            return sum(f.numel() for f in flat_partitions(opt))
        return model_numel(trainer)

    def run(depth: int, grow: bool, out: str, copy: str = "local", points=None, max_steps=None) -> dict:
        os.environ["GROWTH_DISTRIBUTED_COPY"] = copy  # growth/deepspeed.py's copy method
        if ds_config and not cuda:
            # The CPU shim's state is reused (use_configured_state), and accelerate refuses a second
            # DeepSpeed Accelerator on it: forget the previous phase's, keep the process group.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=False)
        targs = transformers.TrainingArguments(
            out, max_steps=max_steps or (args.grow_at + args.steps if grow else args.steps),
            per_device_train_batch_size=args.batch // world,
            learning_rate=1e-3, warmup_steps=1, logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True,
            seed=0, use_cpu=not cuda, deepspeed=ds_config, dataloader_drop_last=True,
            accelerator_config={"use_configured_state": True} if (ds_config or fsdp) and not cuda else None)
        # Built after TrainingArguments, like the model a growth builds: partitioned by zero.Init under ZeRO-3.
        torch.manual_seed(0)
        cfg = ModelConfig(family="llama", hidden_size=args.hidden, num_layers=depth, num_heads=args.heads,
                          max_position_embeddings=args.seq_len)
        model = build_model(cfg, args.vocab, bos_token_id=0, eos_token_id=1, pad_token_id=1).train()
        trainer = transformers.Trainer(model=model, args=targs, train_dataset=data)
        timer = StepTimer()
        for cb in extra_callbacks:
            trainer.add_callback(cb)
        trainer.add_callback(timer)  # before GrowthCallback: a step's timer stops before that step's growth runs
        events = []
        trainer.add_callback(type("EventLog", (transformers.TrainerCallback,), {
            "on_growth": lambda self, a, s, event: events.append(event)})())  # the public growth listener
        points = points or [[args.grow_at, args.target]]
        traffic = []
        if grow:
            enable_growth(trainer, {"schedule": {"initial_depth": depth, "unit": "steps", "points": points}}, run_log=False)
            grow_now = trainer.grow_now

            def counted(to_depth):  # bytes this rank sends / receives during the event, by phase
                before = model_numel(trainer)
                with count_bytes() as c:
                    event = grow_now(to_depth)
                traffic.append({"sent": c.sent, "received": c.received, "phases": c.by_phase(),
                                "fp32_model_bytes_before": 4 * before, "fp32_model_bytes_after": 4 * model_numel(trainer),
                                "fp32_partition_bytes_after": 4 * partition_numel(trainer)})
                return event

            trainer.grow_now = counted
        trainer.train()
        if grow and (len(events) != len(points) or trainer.model.config.num_hidden_layers != points[-1][1]):
            raise RuntimeError(f"{backend}: expected growth to depth {points[-1][1]}, got events {events}")
        first = args.grow_at + 1 + args.warmup if grow else 1 + args.warmup
        timed = range(first, targs.max_steps + 1)
        result = {
            "depth": trainer.model.config.num_hidden_layers,
            "params": sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters()),
            "growth_seconds": events[0]["seconds"] if events else None,
            "step_seconds": [timer.wall[s] for s in timed],
            "step_cpu_seconds": [timer.cpu[s] for s in timed],
            "before_growth_step_seconds": [timer.wall[s] for s in range(2, args.grow_at + 1)] if grow else [],
            "copy": copy if grow else None, "bytes": traffic,
        }
        engine = trainer.model_wrapped
        trainer.accelerator.free_memory()
        if hasattr(engine, "destroy"):  # DeepSpeed: remove its hooks so the next phase starts clean
            engine.destroy()
        del trainer, model, engine
        gc.collect()
        return result

    rank = int(os.environ.get("RANK", 0))
    if args.mode.startswith("rss"):
        # Three growth events (layers -> ... -> target), then a few steps; or a fresh engine of the
        # target depth for as many steps after its start. RSS measured at the end, after a collection.
        import psutil

        final = args.target
        third = max(1, (final - args.layers) // 3)
        depths = [min(final, args.layers + third * (i + 1)) for i in range(3)]
        depths[-1] = final
        points = [[args.grow_at * (i + 1), d] for i, d in enumerate(depths)]
        grow = args.mode == "rss-grown"
        steps_after = args.steps
        last = points[-1][0] + steps_after if grow else steps_after
        seen = {}

        class RSS(transformers.TrainerCallback):  # at the last step, engine and optimizer alive
            def on_step_end(self, a, state, control, **kw):
                if state.global_step == last:
                    gc.collect()
                    seen["rss"] = psutil.Process().memory_info().rss
                    seen["engines"] = sum(1 for o in gc.get_objects() if type(o).__name__ == "DeepSpeedEngine")

        extra_callbacks.append(RSS())
        phase = run(args.layers if grow else final, grow, os.path.join(args.result_dir, "rss"), points=points,
                    max_steps=last)
        phase.update(rss=seen["rss"], engines_alive=seen["engines"], depths=depths)
        with open(os.path.join(args.result_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"backend": backend, "world_size": world, "phases": [{"grow": grow, **phase}]}, f)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return

    phases = []
    for r in range(args.repeats):  # ABBA: grown, fresh, fresh, grown, ...
        order = [True, False] if r % 2 == 0 else [False, True]
        for grow in order:
            t0 = time.perf_counter()
            phase = run(args.layers if grow else args.target, grow, os.path.join(args.result_dir, f"run{len(phases)}"),
                        copy=args.copy[0])
            phases.append({"grow": grow, **phase, "phase_seconds": time.perf_counter() - t0})
    if ds_config:  # the other copy methods: one grown phase each, for their bytes and event time
        for copy in args.copy[1:]:
            phase = run(args.layers, True, os.path.join(args.result_dir, f"run{len(phases)}"), copy=copy)
            phases.append({"grow": True, "bytes_only": True, **phase})
    with open(os.path.join(args.result_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"backend": backend, "world_size": world, "phases": phases}, f)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# --- driver ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:  # not 29500: other runs on this machine may hold it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_argv(args, backend: str, result_dir: str, mode: str = "throughput") -> list[str]:
    keep = ["--steps", args.steps, "--grow-at", args.grow_at, "--warmup", args.warmup, "--repeats", args.repeats,
            "--hidden", args.hidden, "--heads", args.heads, "--layers", args.layers, "--target", args.target,
            "--vocab", args.vocab, "--seq-len", args.seq_len, "--batch", args.batch, "--num-processes", args.num_processes,
            "--threads", args.threads, "--copy", ",".join(args.copy), "--mode", mode]
    return [os.path.abspath(__file__), "--worker", backend, "--result-dir", result_dir, *map(str, keep)]


def launch(args, backend: str, mode: str = "throughput") -> dict:
    """Run the worker for ``backend`` in its own process(es); returns rank 0's result, with every
    rank's under ``per_rank``."""
    import torch

    # The worker runs as a script from scripts/: put the repo on the path for `growth` (no install needed).
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix=f"bench_{backend}_") as result_dir:
        script = worker_argv(args, backend, result_dir, mode)
        ranks = 1 if backend == "single" else args.num_processes
        if backend == "single":
            cmd = [sys.executable, *script]
        else:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   os.path.join("recipes", "accelerate", f"{backend}.yaml"), "--num_processes", str(args.num_processes),
                   "--main_process_port", str(_free_port()), *script]
            if not torch.cuda.is_available() and backend.startswith("zero"):
                env.setdefault("DS_ACCELERATOR", "cpu")
                env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(REPO, ".cache", "torch_extensions"))
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        paths = [os.path.join(result_dir, f"rank{r}.json") for r in range(ranks)]
        if proc.returncode != 0 or not all(os.path.exists(p) for p in paths):
            raise RuntimeError(f"{backend} worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        per_rank = []
        for path in paths:
            with open(path) as f:
                per_rank.append(json.load(f))
        return {**per_rank[0], "per_rank": per_rank}


def verdict(ratio: float, noise: float | None) -> str:
    """PASS / FAIL when the ratio is on its side of the target by more than the run-to-run spread
    (scripts/bench.py's rule); UNRESOLVED when the target lies within that spread of the ratio."""
    n = noise or 0.0
    if ratio / (1 + n) >= THROUGHPUT_TARGET:
        return "PASS"
    return "FAIL" if ratio * (1 + n) < THROUGHPUT_TARGET else "UNRESOLVED"


def summarize(result: dict) -> dict:
    """Medians over the pooled steps of all grown / all fresh phases, the two ratios, and the noise:
    the largest relative spread between the medians of two phases of the same kind (grown vs grown,
    fresh vs fresh), i.e. what the same measurement repeated in the same run disagrees by."""
    all_phases = result["phases"]
    phases = [p for p in all_phases if not p.get("bytes_only")]

    def pooled(key, grow):
        return [s for p in phases if p["grow"] == grow for s in p[key]]

    def spread(key):
        out = []
        for grow in (True, False):
            medians = [statistics.median(p[key]) for p in phases if p["grow"] == grow]
            if len(medians) > 1:
                out.append(max(medians) / min(medians) - 1)
        return max(out) if out else None

    grown, fresh = statistics.median(pooled("step_seconds", True)), statistics.median(pooled("step_seconds", False))
    grown_cpu = statistics.median(pooled("step_cpu_seconds", True))
    fresh_cpu = statistics.median(pooled("step_cpu_seconds", False))
    before = pooled("before_growth_step_seconds", True)
    growth = statistics.median(p["growth_seconds"] for p in phases if p["grow"])
    noise, noise_cpu = spread("step_seconds"), spread("step_cpu_seconds")
    return {
        "backend": result["backend"], "world_size": result["world_size"],
        "params_grown": next(p["params"] for p in phases if p["grow"]),
        "params_fresh": next(p["params"] for p in phases if not p["grow"]),
        "growth_seconds": growth, "step_seconds_before_growth": statistics.median(before) if before else None,
        "step_seconds_grown": grown, "step_seconds_fresh": fresh, "growth_over_step": growth / grown,
        "throughput_ratio": fresh / grown, "noise": noise, "verdict": verdict(fresh / grown, noise),
        "step_cpu_seconds_grown": grown_cpu, "step_cpu_seconds_fresh": fresh_cpu,
        "cpu_throughput_ratio": fresh_cpu / grown_cpu, "cpu_noise": noise_cpu,
        "cpu_verdict": verdict(fresh_cpu / grown_cpu, noise_cpu),
        "timed_steps": {"grown": len(pooled("step_seconds", True)), "fresh": len(pooled("step_seconds", False))},
        "bytes": summarize_bytes(result),
        "phases": all_phases,  # every timed step, in run order
    }


def summarize_bytes(result: dict) -> dict:
    """Per copy method: the growth event's bytes per rank (the largest over ranks, whole event and
    by phase), its seconds, and the sizes to judge them by (fp32 model, this rank's new partition)."""
    out = {}
    for i, phase in enumerate(result["phases"]):
        if not phase["grow"] or not phase.get("bytes") or phase["copy"] in out:
            continue
        events = [r["phases"][i]["bytes"][0] for r in result["per_rank"]]
        names = sorted({n for e in events for n in e["phases"]})
        out[phase["copy"]] = {
            "received_max": max(e["received"] for e in events), "sent_max": max(e["sent"] for e in events),
            "by_phase_received_max": {n: max(e["phases"].get(n, {}).get("received", 0) for e in events) for n in names},
            "by_phase_sent_max": {n: max(e["phases"].get(n, {}).get("sent", 0) for e in events) for n in names},
            "fp32_model_bytes_before": events[0]["fp32_model_bytes_before"],
            "fp32_model_bytes_after": events[0]["fp32_model_bytes_after"],
            # master + two Adam moments of this rank's new partition (the largest over ranks)
            "partition_state_bytes": 3 * max(e["fp32_partition_bytes_after"] for e in events),
            "growth_seconds": phase["growth_seconds"],
        }
    return out


RSS_TARGET = 1.05


def bytes_verdict(backend: str, copy: str, b: dict) -> tuple[str | None, str]:
    """(target, status) for the copy phase's bytes of one growth event."""
    copy_received = b["by_phase_received_max"].get("copy", 0)
    copy_sent = b["by_phase_sent_max"].get("copy", 0)
    if backend == "fsdp2":  # in place, local shard copies: nothing crosses ranks in the whole event
        return "0 bytes", "PASS" if b["received_max"] == 0 and b["sent_max"] == 0 else "FAIL"
    if copy != "local" or not backend.startswith("zero"):
        return None, "INFO"
    if backend == "zero3":
        return "0 bytes", "PASS" if copy_received == 0 and copy_sent == 0 else "FAIL"
    return "<= own new partition (master + 2 moments)", "PASS" if copy_received <= b["partition_state_bytes"] else "FAIL"


def rss_row(args, backend: str) -> dict:
    """Three growth events vs a fresh engine of the final depth, each in its own launch."""
    grown, fresh = launch(args, backend, "rss-grown"), launch(args, backend, "rss-fresh")
    ratios = [g["phases"][0]["rss"] / f["phases"][0]["rss"] for g, f in zip(grown["per_rank"], fresh["per_rank"])]
    return {"backend": backend, "world_size": args.num_processes, "rss_ratio_max": max(ratios), "rss_ratios": ratios,
            "rss_grown": [g["phases"][0]["rss"] for g in grown["per_rank"]],
            "rss_fresh": [f["phases"][0]["rss"] for f in fresh["per_rank"]],
            "depths": grown["phases"][0]["depths"], "engines_alive_grown": grown["phases"][0]["engines_alive"],
            "engines_alive_fresh": fresh["phases"][0]["engines_alive"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    rows, rss_rows, failed, start = [], [], [], time.perf_counter()
    for procs in args.procs:
        args.num_processes = procs
        for backend in args.backends:
            if backend == "single" and procs != args.procs[0]:
                continue
            t0 = time.perf_counter()
            try:
                if (args.rss or args.rss_only) and backend != "single":
                    rss_rows.append(rss_row(args, backend))
                if args.rss_only:
                    continue
                row = summarize(launch(args, backend))
            except RuntimeError as e:  # report it and go on with the other backends
                print(e, file=sys.stderr, flush=True)
                failed.append(f"{backend} x{procs}")
                continue
            row["launch_seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"[{backend} x{procs}] done in {row['launch_seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"llama hidden {args.hidden}, depth {args.layers} -> {args.target} after step {args.grow_at}, seq {args.seq_len}, "
          f"global batch {args.batch}; medians over {args.steps - args.warmup} steps x {args.repeats} run(s) per side")
    print(f"{'backend':<8}{'procs':>6}{'growth s':>10}{'grown step s':>14}{'growth/step':>13}{'fresh step s':>14}"
          f"{'fresh/grown':>13}{'noise':>7}{'':12}{'cpu fresh/grown':>16}{'noise':>7}")

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    for r in rows:
        print(f"{r['backend']:<8}{r['world_size']:>6}{r['growth_seconds']:>10.3f}{r['step_seconds_grown']:>14.4f}"
              f"{r['growth_over_step']:>13.2f}{r['step_seconds_fresh']:>14.4f}{r['throughput_ratio']:>13.3f}"
              f"{pct(r['noise']):>7} {r['verdict']:<11}{r['cpu_throughput_ratio']:>16.3f}{pct(r['cpu_noise']):>7} "
              f"{r['cpu_verdict']}")
    for backend in failed:
        print(f"{backend:<8} ERROR (worker failed; its output is above)")
    print(f"target: fresh/grown step time >= {THROUGHPUT_TARGET}. noise: spread between repeated phases of the same kind "
          f"(UNRESOLVED: within that of the target). cpu: this process's CPU time per step, less sensitive "
          f"to other load than wall time.")

    results = []
    print("\nBytes per rank in one growth event (largest over ranks; rebuild = new model + engine, copy = state moved)")
    print(f"{'backend':<8}{'procs':>6}{'copy':>8}{'received':>12}{'sent':>12}{'rebuild rx':>12}{'copy rx':>12}"
          f"{'model fp32':>12}{'rx/model':>10}{'partition':>12}{'event s':>9}  verdict")
    for r in rows:
        for copy, b in r["bytes"].items():
            target, status = bytes_verdict(r["backend"], copy, b)
            rx = b["by_phase_received_max"]
            print(f"{r['backend']:<8}{r['world_size']:>6}{copy:>8}{b['received_max']:>12,}{b['sent_max']:>12,}"
                  f"{rx.get('rebuild', 0):>12,}{rx.get('copy', 0):>12,}{b['fp32_model_bytes_after']:>12,}"
                  f"{b['received_max'] / b['fp32_model_bytes_after']:>10.2f}{b['partition_state_bytes']:>12,}"
                  f"{b['growth_seconds']:>9.2f}  {status if target else ''}")
            name = f"{r['backend']} x{r['world_size']} {copy}"
            results.append({"metric": f"{name}: bytes received per rank, copy phase of a growth event",
                            "value": float(rx.get("copy", 0)), "target": target, "status": status, "noise": None,
                            "note": f"partition state {b['partition_state_bytes']} B, grown model fp32 "
                                    f"{b['fp32_model_bytes_after']} B"})
            results.append({"metric": f"{name}: bytes received per rank, whole growth event", "value": float(b["received_max"]),
                            "target": None, "status": "INFO", "noise": None,
                            "note": f"rebuild {rx.get('rebuild', 0)} B + copy {rx.get('copy', 0)} B; sent {b['sent_max']} B"})
            results.append({"metric": f"{name}: growth event seconds", "value": float(b["growth_seconds"]), "target": None,
                            "status": "INFO", "noise": None, "note": "CPU, gloo; one event"})
    print("target: ZeRO-3 local: 0 bytes in the copy phase; ZeRO-1/2 local: at most the rank's new partition (fp32 master "
          "+ 2 moments); FSDP2: 0 bytes in the whole event (partition: this rank's shards); gather: the old path, for comparison.")
    for r in rows:
        name = f"{r['backend']} x{r['world_size']}"
        status = {"PASS": "PASS", "FAIL": "FAIL", "UNRESOLVED": "NOISE"}[r["verdict"]]
        results.append({"metric": f"{name}: fresh/grown step time", "value": r["throughput_ratio"],
                        "target": f">= {THROUGHPUT_TARGET}", "status": status, "noise": r["noise"],
                        "note": f"median of {r['timed_steps']['grown']} grown / {r['timed_steps']['fresh']} fresh steps"})
        results.append({"metric": f"{name}: growth event / grown step", "value": r["growth_over_step"], "target": None,
                        "status": "INFO", "noise": None, "note": f"event {r['growth_seconds']:.3f} s"})
    if rss_rows:
        print("\nRSS at the last step, after 3 growth events / of a fresh engine of the final depth (per rank, separate launches)")
        for r in rss_rows:
            status = "PASS" if r["rss_ratio_max"] <= RSS_TARGET else "FAIL"
            print(f"{r['backend']:<8}{r['world_size']:>6}  depths {args.layers} -> {' -> '.join(map(str, r['depths']))}: "
                  f"{' '.join(f'{x:.3f}' for x in r['rss_ratios'])}  (grown {max(r['rss_grown']) / 2**20:.0f} MiB, fresh "
                  f"{max(r['rss_fresh']) / 2**20:.0f} MiB; DeepSpeed engines alive {r['engines_alive_grown']} vs "
                  f"{r['engines_alive_fresh']})  {status}")
            results.append({"metric": f"{r['backend']} x{r['world_size']}: RSS after 3 growth events / fresh engine",
                            "value": r["rss_ratio_max"], "target": f"<= {RSS_TARGET}", "status": status, "noise": None,
                            "note": f"largest over ranks; grown {max(r['rss_grown'])} B, fresh {max(r['rss_fresh'])} B"})
    for name in failed:
        results.append({"metric": f"{name}: worker", "value": 0.0, "target": "runs", "status": "FAIL", "noise": None,
                        "note": "worker failed"})
    print(f"Total {time.perf_counter() - start:.0f} s.")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("worker", "result_dir")},
                       "throughput_target": THROUGHPUT_TARGET, "results": rows, "rss": rss_rows, "failed": failed}, f,
                      indent=2)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"name": "bench_distributed", "command": " ".join(["python", "scripts/bench_distributed.py",
                                                                          *(argv if argv is not None else sys.argv[1:])]),
                       "results": results}, f, indent=2)
    if args.smoke and (failed or not rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
