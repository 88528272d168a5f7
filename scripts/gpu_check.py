"""GPU check: one growth of a ~125M llama to ~350M inside an HF Trainer run, bf16, per stage:
ZeRO-3, FSDP2, torch.compile and ZeRO-2 (in that order; ``--stages`` picks).

* ``zero2`` / ``zero3``: ``accelerate launch --config_file recipes/accelerate/zero{2,3}.yaml``; with
  world size 1 ZeRO still builds, partitions and, at growth, rebuilds its engine.
* ``fsdp2``: ``accelerate launch --config_file recipes/accelerate/fsdp2.yaml`` (torch fully_shard,
  one unit per decoder layer, bf16 MixedPrecisionPolicy); growth adds units in place
  (growth/fsdp.py). With one GPU the mesh has one rank, so the 0-byte claim is checked on CPU
  (tests/test_fsdp.py); here it is the CUDA path, memory and throughput that are checked.
* ``compile``: one plain process with the Trainer's own ``torch_compile=True`` (blocks compiled
  one by one, growth/compile.py); also reports dynamo's unique graphs and recompiles.

For each stage the driver launches this script twice, one process at a time, so that one run's
allocations cannot hide in the other's peak:

* grown: llama hidden 1024, 16 heads, vocab 24576, 6 layers (126.2M parameters), trained
  ``--steps-before`` steps, then grown by stack_last to 24 layers (353.9M) and trained
  ``--steps-after`` steps.
* fresh: the same model built directly with 24 layers, trained ``--steps-after`` steps.

Data are random tokens (no downloads), seq 1024, micro-batch ``--batch``. Measured per stage:
tokens/s before growth, after growth and of the fresh model (median step time; the first
``--warmup`` steps of each are dropped: ZeRO-3 traces its prefetch order in them, compile compiles),
the growth event's seconds (synchronized) and bytes sent / received by this rank
(growth/comm.py), and peak GPU memory (``torch.cuda.max_memory_allocated``):

* train peak: over the training steps at 24 layers, counted from a reset right after growth
  (grown) or right before the first step (fresh); the comparison that matters (target: within 5%).
* growth peak: over the growth event alone, when the old and the new engine briefly coexist.
* process peak: over the whole process, engine construction included.

Prints one table and writes ``--out`` (JSON). A stage whose launch fails is reported as ERROR
with its output, and the other stages still run. Each launch has a time limit (``--launch-timeout``)
and the whole check a deadline (``--deadline``, default 450 s: under 8 minutes with start-up).

On one H200 (see docs/gpu_check.md for carrying DeepSpeed and transformers there):
    python scripts/gpu_check.py --out gpu_check.json
Smoke test on CPU (tiny llama 2 -> 4 layers, fp32, 2 processes with gloo (compile: 1 process,
dynamo's eager backend), no memory numbers; FSDP2 and compile, ``--stages`` adds zero3 / zero2):
    python scripts/gpu_check.py --smoke --out /tmp/gpu_check_smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_TARGET = 1.05
# stage: accelerate config (None: one plain process), DeepSpeed JSON
STAGES = {
    "zero3": ("zero3.yaml", "ds_zero3.json"),
    "fsdp2": ("fsdp2.yaml", None),
    "compile": (None, None),
    "zero2": ("zero2.yaml", "ds_zero2.json"),
}
# name: hidden, heads, vocab, layers before -> after, seq, micro-batch, steps before / after, warmup
SIZES = {
    "gpu": dict(hidden=1024, heads=16, vocab=24576, layers=6, target=24, seq_len=1024, batch=16,
                steps_before=12, steps_after=16, warmup=2),
    "smoke": dict(hidden=64, heads=4, vocab=256, layers=2, target=4, seq_len=32, batch=2,
                  steps_before=3, steps_after=4, warmup=1),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (2 processes, fp32): checks the script runs end to end")
    p.add_argument("--stages", default=None,
                   help=f"comma-separated, run in this order; default {','.join(STAGES)} (smoke: fsdp2,compile)")
    p.add_argument("--compile-backend", default=None, help="torch_compile_backend of the compile stage (default inductor; "
                                                          "smoke: eager, which traces without code generation)")
    for name, default in SIZES["gpu"].items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {default} (smoke: {SIZES['smoke'][name]})")
    p.add_argument("--num-processes", type=int, default=None, help="default 1 on GPU, 2 on CPU (the CPU DeepSpeed shim needs 2)")
    p.add_argument("--launch-timeout", type=int, default=240, help="seconds one launch may take before it is killed")
    p.add_argument("--deadline", type=int, default=None,
                   help="seconds for the whole check: later launches get only what is left, so the table is printed in time")
    p.add_argument("--out", help="write the numbers as JSON here")
    p.add_argument("--worker", choices=("grown", "fresh"), help=argparse.SUPPRESS)
    p.add_argument("--stage", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, default in SIZES["smoke" if args.smoke else "gpu"].items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.stages is None:
        args.stages = "fsdp2,compile" if args.smoke else ",".join(STAGES)  # smoke: the ZeRO stages run with --stages
    if args.deadline is None:  # GPU: under 8 minutes in all; smoke (a shared CPU): only a guard against a hang
        args.deadline = 1200 if args.smoke else 450
    args.stages = [s for s in str(args.stages).split(",") if s]
    for s in args.stages:
        if s not in STAGES:
            raise ValueError(f"--stages: unknown stage {s!r}; choose from {', '.join(STAGES)}")
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.smoke else "inductor"
    if args.target <= args.layers:
        raise ValueError(f"--target {args.target} must be larger than --layers {args.layers}")
    for name in ("steps_before", "steps_after"):
        if args.warmup >= getattr(args, name):
            raise ValueError(f"--warmup {args.warmup} leaves no timed step in --{name.replace('_', '-')} {getattr(args, name)}")
    return args


# --- worker: one process (or one rank) of one launch ---------------------------------------------
def worker(args) -> None:
    import torch
    import transformers

    from growth.comm import count_bytes
    from growth.distributed import cpu_distributed_shim
    from growth.models import ModelConfig, build_model
    from growth.trainer import enable_growth

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise ValueError("no GPU: run with --smoke on CPU")
    ds_name = STAGES[args.stage][1]
    ds_config = os.path.join(REPO, "recipes", "accelerate", ds_name) if ds_name else None
    fsdp, compiled = args.stage == "fsdp2", args.stage == "compile"
    shim = cpu_distributed_shim(deepspeed=ds_config is not None, fsdp=fsdp)  # does nothing with a GPU
    world = int(os.environ.get("WORLD_SIZE", 1))
    grow = args.worker == "grown"
    max_steps = args.steps_before + args.steps_after if grow else args.steps_after
    tokens_per_step = args.batch * args.seq_len * world

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (max_steps * args.batch * world, args.seq_len), generator=g)
    data = [{"input_ids": row, "labels": row} for row in ids]

    def peak() -> int | None:
        return torch.cuda.max_memory_allocated() if cuda else None

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    steps_before = args.steps_before  # the callbacks' own ``args`` are the TrainingArguments

    class Probe(transformers.TrainerCallback):
        """Step times, and peak memory split at the first step (fresh) or at the growth (grown).
        Added before GrowthCallback, so its on_step_end runs before that step's growth."""

        def __init__(self):
            self.seconds: dict[int, float] = {}
            self.memory: dict[str, int | None] = {}
            self.events: list[dict] = []  # growth events, from the public on_growth listener

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            if state.global_step == 0 and not grow:
                self.memory["init_peak"] = peak()
                reset_peak()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.seconds[state.global_step] = time.perf_counter() - self.start
            if grow and state.global_step == steps_before:
                self.memory["before_growth_peak"] = peak()
                reset_peak()
                self.growth_start = time.perf_counter()

        def on_growth(self, args, state, event):  # called by GrowthCallback right after the growth
            if cuda:
                torch.cuda.synchronize()
            # The event's own "seconds" stop before queued GPU work has finished; this includes it.
            self.growth_seconds = time.perf_counter() - self.growth_start
            self.events.append(event)
            self.memory["growth_peak"] = peak()
            reset_peak()

        def on_train_end(self, args, state, control, **kw):
            self.memory["train_peak"] = peak()
            self.memory["allocated_end"] = torch.cuda.memory_allocated() if cuda else None
            self.memory["reserved_peak"] = torch.cuda.max_memory_reserved() if cuda else None

    targs = transformers.TrainingArguments(
        os.path.join(os.path.dirname(args.result), "trainer"), max_steps=max_steps, per_device_train_batch_size=args.batch,
        learning_rate=3e-4, warmup_steps=2, weight_decay=0.1, logging_steps=10**6, save_strategy="no", report_to=[],
        disable_tqdm=True, seed=0, bf16=cuda, use_cpu=not cuda, deepspeed=ds_config, dataloader_drop_last=True,
        accelerator_config={"use_configured_state": True} if shim else None,
        torch_compile=compiled, torch_compile_backend=args.compile_backend if compiled else None)
    # Built after TrainingArguments: under ZeRO-3, zero.Init partitions it at construction, as at growth.
    torch.manual_seed(0)
    cfg = ModelConfig(family="llama", hidden_size=args.hidden, num_layers=args.layers if grow else args.target,
                      num_heads=args.heads, max_position_embeddings=args.seq_len)
    model = build_model(cfg, args.vocab, bos_token_id=0, eos_token_id=1, pad_token_id=1).train()
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=data)
    probe = Probe()
    trainer.add_callback(probe)
    growth_bytes = []
    if not grow:  # the same Trainer subclass without a schedule (as a baseline run): compiled per block alike
        enable_growth(trainer, {}, run_log=False)
    if grow:
        enable_growth(trainer, {"schedule": {"initial_depth": args.layers, "unit": "steps",
                                             "points": [[args.steps_before, args.target]]}}, run_log=False)
        grow_now = trainer.grow_now

        def counted(depth):  # bytes this rank sends / receives during the event (growth/comm.py)
            with count_bytes() as c:
                event = grow_now(depth)
            growth_bytes.append({"sent": c.sent, "received": c.received, "by_phase": c.by_phase()})
            return event

        trainer.grow_now = counted
    params_start = sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters())
    trainer.train()
    events = probe.events
    depth = trainer.model.config.num_hidden_layers
    if depth != args.target or len(events) != (1 if grow else 0):
        raise RuntimeError(f"{args.stage} {args.worker}: ended at depth {depth} after {len(events)} growth(s)")
    extra = {}
    if fsdp:  # every parameter a DTensor; this rank's share of the model
        from growth.fsdp import local_numel, unsharded_parameters

        extra.update(unsharded=len(unsharded_parameters(trainer.model)), local_params_end=local_numel(trainer.model))
    if compiled:
        from torch._dynamo.utils import counters

        from growth.compile import compiled_blocks

        extra.update(compiled_blocks=compiled_blocks(trainer.model), unique_graphs=counters["stats"]["unique_graphs"],
                     recompiles=sum(counters["recompiles"].values()))  # absent key: none

    def tokens_per_second(first: int, last: int) -> float:
        return tokens_per_step / statistics.median(probe.seconds[s] for s in range(first, last + 1))

    w = args.warmup
    result = {
        "stage": args.stage, "kind": args.worker, "world_size": world, "bf16": cuda, "growth_bytes": growth_bytes, **extra,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "params_start": params_start, "params_end": sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters()),
        "tokens_per_step": tokens_per_step, "step_seconds": probe.seconds, "memory": probe.memory,
        "growth_seconds": probe.growth_seconds if grow else None,
        "growth_event_seconds": events[0]["seconds"] if events else None,
        "tokens_per_second_before": tokens_per_second(1 + w, args.steps_before) if grow else None,
        "tokens_per_second_after": (tokens_per_second(args.steps_before + 1 + w, max_steps) if grow
                                    else tokens_per_second(1 + w, max_steps)),
    }
    if int(os.environ.get("RANK", 0)) == 0:
        with open(args.result, "w") as f:
            json.dump(result, f)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# --- driver ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a launch that is still running. torchrun starts each rank in a session of its own, so
    the ranks are ended by its agent on SIGTERM, not by a signal to the launcher's group."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def launch(args, stage: str, kind: str, cuda: bool, timeout: float) -> dict:
    """One launch of the worker (``accelerate launch`` with the stage's config, or one plain process
    for ``compile``); returns rank 0's result, or {"error": output tail}."""
    config = STAGES[stage][0]
    procs = 1 if config is None else args.num_processes or (1 if cuda else 2)
    sizes = [x for name in SIZES["gpu"] for x in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    # The worker runs as a script from scripts/: put the repo on the path for `growth` (no install needed).
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    if not cuda:
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(REPO, ".cache", "torch_extensions"))
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{stage}_{kind}_") as tmp:
        result = os.path.join(tmp, "result.json")
        worker = [os.path.abspath(__file__), "--worker", kind, "--stage", stage, "--result", result, *sizes,
                  "--compile-backend", args.compile_backend, *(["--smoke"] if args.smoke else [])]
        launcher = [] if config is None else [
            "-m", "accelerate.commands.launch", "--config_file", os.path.join("recipes", "accelerate", config),
            "--num_processes", str(procs), "--main_process_port", str(_free_port())]
        cmd = [sys.executable, *launcher, *worker]
        start = time.perf_counter()
        log_path = os.path.join(tmp, "output.log")
        with open(log_path, "w") as log:  # a file, not a pipe: a stray rank cannot block the read
            # Its own process group, to signal the launcher and its agent together.
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = "timeout"
            finally:  # also when this driver is interrupted or terminated
                _stop(proc)
        with open(log_path, errors="replace") as f:
            output = f.read()[-8000:]
        if code == "timeout":
            output = f"killed after {timeout:.0f} s\n{output}"
        seconds = time.perf_counter() - start
        if code != 0 or not os.path.exists(result):
            return {"stage": stage, "kind": kind, "error": f"exit {code}:\n{output}", "launch_seconds": seconds}
        with open(result) as f:
            return {**json.load(f), "launch_seconds": seconds}


def compare(grown: dict, fresh: dict) -> dict:
    """The table row of one stage: throughput and memory of the grown model against the fresh one."""

    def ratio(a, b):
        return a / b if a is not None and b else None

    gm, fm = grown["memory"], fresh["memory"]
    process_grown = max((v for k, v in gm.items() if k.endswith("_peak") and k != "reserved_peak" and v is not None), default=None)
    process_fresh = max((v for v in (fm.get("init_peak"), fm.get("train_peak")) if v is not None), default=None)
    row = {
        "stage": grown["stage"], "device": grown["device"], "params_before": grown["params_start"],
        "params_after": grown["params_end"], "params_fresh": fresh["params_start"],
        "growth_seconds": grown["growth_seconds"],
        "tokens_per_second_before": grown["tokens_per_second_before"],
        "tokens_per_second_after": grown["tokens_per_second_after"],
        "tokens_per_second_fresh": fresh["tokens_per_second_after"],
        "throughput_ratio": ratio(grown["tokens_per_second_after"], fresh["tokens_per_second_after"]),
        "growth_over_step": grown["growth_seconds"] * grown["tokens_per_second_after"] / grown["tokens_per_step"],
        "train_peak_grown": gm["train_peak"], "train_peak_fresh": fm["train_peak"],
        "train_peak_ratio": ratio(gm["train_peak"], fm["train_peak"]),
        "growth_peak": gm["growth_peak"], "process_peak_grown": process_grown, "process_peak_fresh": process_fresh,
        "process_peak_ratio": ratio(process_grown, process_fresh),
    }
    if row["train_peak_ratio"] is not None:
        row["memory_pass"] = row["train_peak_ratio"] <= MEMORY_TARGET
    event = (grown.get("growth_bytes") or [{}])[0]
    row["growth_bytes_received"], row["growth_bytes_sent"] = event.get("received"), event.get("sent")
    notes, checks = [f"growth rx/tx {event.get('received', 0):,}/{event.get('sent', 0):,} B"], {}
    if "unsharded" in grown:  # fsdp2
        checks["all_parameters_sharded"] = grown["unsharded"] == 0 and fresh["unsharded"] == 0
        notes.append(f"DTensor params: {'all' if checks['all_parameters_sharded'] else 'NOT all'}, "
                     f"local {grown['local_params_end'] / 1e6:.1f}M of {grown['params_end'] / 1e6:.1f}M")
    if "compiled_blocks" in grown:  # compile
        checks["all_blocks_compiled"] = all(grown["compiled_blocks"]) and all(fresh["compiled_blocks"])
        notes.append(f"blocks compiled: {'all' if checks['all_blocks_compiled'] else grown['compiled_blocks']}, "
                     f"unique graphs grown/fresh {grown['unique_graphs']}/{fresh['unique_graphs']}, "
                     f"recompiles {grown['recompiles'] or 0}/{fresh['recompiles'] or 0}")
        row.update(unique_graphs_grown=grown["unique_graphs"], unique_graphs_fresh=fresh["unique_graphs"],
                   recompiles_grown=grown["recompiles"], recompiles_fresh=fresh["recompiles"])
    row.update(checks=checks, checks_pass=all(checks.values()), notes="; ".join(notes))
    return row


def main(argv=None) -> None:
    try:
        args = parse_args(argv)
    except ValueError as e:  # bad input: one line, before anything is launched
        raise SystemExit(f"error: {e}") from None
    if args.worker:
        worker(args)
        return
    import torch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that launch() still ends its ranks
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("no GPU here: run on the device (docs/gpu_check.md), or with --smoke on CPU")
    start, rows, errors, launches = time.perf_counter(), [], [], []
    for stage in args.stages:
        runs = {}
        for kind in ("grown", "fresh"):
            left = args.deadline - (time.perf_counter() - start)
            if left < 30:
                runs[kind] = {"stage": stage, "kind": kind, "error": f"not run: --deadline {args.deadline} s reached",
                              "launch_seconds": 0.0}
            else:
                runs[kind] = launch(args, stage, kind, cuda, min(args.launch_timeout, left))
            launches.append(runs[kind])
            status = "ERROR" if "error" in runs[kind] else "done"
            print(f"[{stage} {kind}] {status} in {runs[kind]['launch_seconds']:.0f} s", file=sys.stderr, flush=True)
            if "error" in runs[kind]:
                print(runs[kind]["error"], file=sys.stderr, flush=True)
                break  # without the grown run there is nothing to compare: save the time
        if any("error" in r for r in runs.values()):
            errors.append(stage)
        else:
            rows.append(compare(runs["grown"], runs["fresh"]))

    gib = 2**30

    def mem(x):
        return "n/a" if x is None else f"{x / gib:.2f}"

    def num(x, fmt):
        return "n/a" if x is None else format(x, fmt)

    device = rows[0]["device"] if rows else ("cuda" if cuda else "cpu")
    print(f"{device}, {'bf16' if cuda else 'fp32'}: llama hidden {args.hidden}, vocab {args.vocab}, depth {args.layers} -> "
          f"{args.target} (stack_last) after step {args.steps_before}, then {args.steps_after} steps; fresh {args.target} "
          f"layers {args.steps_after} steps; seq {args.seq_len}, micro-batch {args.batch}")
    print(f"{'stage':<7}{'params M':>15}{'growth s':>10}{'growth/step':>13}{'tok/s before':>14}{'tok/s after':>13}"
          f"{'tok/s fresh':>13}{'after/fresh':>13}{'train peak GiB grown/fresh':>28}{'ratio':>7}{'growth peak':>13}"
          f"{'process peak grown/fresh':>26}  notes")
    for r in rows:
        params = f"{r['params_before'] / 1e6:.1f}->{r['params_after'] / 1e6:.1f}"
        peaks = f"{mem(r['train_peak_grown'])}/{mem(r['train_peak_fresh'])}"
        process = f"{mem(r['process_peak_grown'])}/{mem(r['process_peak_fresh'])}"
        print(f"{r['stage']:<7}{params:>15}{r['growth_seconds']:>10.2f}{r['growth_over_step']:>13.1f}"
              f"{r['tokens_per_second_before']:>14,.0f}{r['tokens_per_second_after']:>13,.0f}{r['tokens_per_second_fresh']:>13,.0f}"
              f"{r['throughput_ratio']:>13.3f}{peaks:>28}{num(r['train_peak_ratio'], '.3f'):>7}{mem(r['growth_peak']):>13}"
              f"{process:>26}  {r['notes']}{'' if r['checks_pass'] else '  CHECK FAILED'}")
    for stage in errors:
        print(f"{stage:<7} ERROR (its launch failed; output above)")
    print(f"train peak: max_memory_allocated over the steps at depth {args.target} (target grown/fresh <= {MEMORY_TARGET}); "
          f"growth peak: over the growth event; total {time.perf_counter() - start:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k not in ("worker", "stage", "result")},
                       "memory_target": MEMORY_TARGET, "results": rows, "failed_stages": errors, "launches": launches},
                      f, indent=2)
    if errors or not all(r["checks_pass"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
