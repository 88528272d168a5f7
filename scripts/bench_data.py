"""Benchmark the data pipeline (growth/data.py) on a generated corpus; ratios from one run.

Generates a corpus of `--gb` GB of text (jsonl shards of the running Python's stdlib sources, each
document given a unique header; no download) under `--work`, trains a byte-level BPE on 5 MB of it,
then measures:

* preparation throughput (tokens/s) with data.num_proc 1 and 2 on a `--slice_mb` MB slice, and the
  ratio (target >= 1.7 on 2 cores: it needs two idle cores, so it is NOISE when the load average
  says the cores were busy);
* peak RSS of a whole preparation (the process tree: the main process and its workers, summed, so
  copy-on-write pages count twice: an upper bound) at ~100 MB, at `--gb` and at each `--rss_gb`
  (default 2 GB: the corpus is generated at the largest size, the others are its slices; target < 2 GB);
* time from launch to the first optimizer step of recipes/gpt_125m.yaml scaled to a CPU model
  (same data section pointed at the corpus; hidden 64, 2 heads, batch 2, the BPE instead of
  gpt2): prepared with the cache ready (a cluster job after scripts/prepare_data.py), prepared
  from scratch (preparation included: the first run on a new corpus), and streaming;
* dataloader wait as a share of step time at the tiny recipe (target < 5%): the time between
  one optimizer step's end and the next one's begin (where the Trainer fetches its batches).

The exit code is 0 whatever the result; a missed target prints FAIL. `--json PATH` writes the
scripts/bench.py convention; `--smoke` runs tiny sizes in seconds to check the script works.

    python scripts/bench_data.py                       # 1 GB corpus, RSS also at 2 GB: ~30 min on 2 idle cores
    python scripts/bench_data.py --gb 0.3 --json out/bench_data.json
    python scripts/bench_data.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RSS_TARGET_GB = 2.0
SPEEDUP_TARGET = 1.7
WAIT_TARGET = 0.05


def generate_corpus(out: Path, gb: float, files: int = 32) -> Path:
    """`gb` GB of jsonl documents: stdlib sources (tests included), each with a unique first line."""
    done = out / f"done-{gb}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for p in sorted(root.rglob("*.py")):
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    target = int(gb * 1e9)
    handles = [open(out / f"shard-{i:04d}.jsonl", "w") for i in range(files)]
    written, n = 0, 0
    while written < target:
        text = texts[n % len(texts)]
        line = json.dumps({"text": f"# document {n}\n{text}", "id": n}) + "\n"
        handles[n % files].write(line)
        written += len(line)
        n += 1
    for h in handles:
        h.close()
    done.write_text(str(written))
    return out


def slice_corpus(src: Path, out: Path, mb: float) -> Path:
    """The first `mb` MB of each shard of `src`, cut at lines, as a corpus of its own."""
    done = out / f"done-{mb}"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    shards = sorted(src.glob("*.jsonl"))
    per = int(mb * 1e6 / len(shards))
    for s in shards:
        with open(s) as f, open(out / s.name, "w") as g:
            size = 0
            for line in f:
                if size >= per:
                    break
                g.write(line)
                size += len(line)
    done.write_text("ok")
    return out


def tree_rss(pid: int, pss: bool = False) -> int:
    """RSS (or, with `pss`, proportional set size) of a process and its children, summed. Forked
    workers share the parent's pages copy-on-write: RSS counts those once per process (an upper
    bound), PSS splits them among the sharers (what the tree really holds)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss if pss else p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_sampled(cmd: list[str], env=None, watch: str | None = None, timeout: float = 7200, interval: float = 0.05,
                pss: bool = True) -> dict:
    """Run `cmd`, sampling the RSS (and PSS) of its process tree every `interval` s; with `watch`,
    the seconds until that text first appears in its output. PSS reads every mapping of every
    process (/proc/PID/smaps): a throughput run samples RSS only, and rarely, or the sampler takes
    CPU from the workers it measures (with 2 workers on 2 cores it has no core of its own)."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak, peak_pss, seen, lines = 0, 0, None, []

    def sample():
        nonlocal peak, peak_pss
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            if pss:
                peak_pss = max(peak_pss, tree_rss(proc.pid, pss=True))
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for line in proc.stdout:
        lines.append(line)
        if watch and seen is None and watch in line:
            seen = time.time() - start
            proc.terminate()  # the rest of the run is not measured
    proc.wait(timeout=timeout)
    t.join()
    return {"seconds": time.time() - start, "peak_rss": peak, "peak_pss": peak_pss, "first": seen, "rc": proc.returncode, "log": "".join(lines)}


def prepare_cmd(source: Path, cache: Path, tokenizer: Path, num_proc: int, extra=()) -> list[str]:
    return [sys.executable, "scripts/prepare_data.py", "--config", "recipes/tiny.yaml", "--data.source",
            str(source / "*.jsonl"), "--data.cache_dir", str(cache), "--tokenizer.name_or_path", str(tokenizer),
            "--tokenizer.train_bpe", "false", "--data.num_proc", str(num_proc), "--data.block_size", "128",
            "--data.max_eval_tokens", "65536", *extra]


def prepared_tokens(log: str) -> int:
    for line in log.splitlines():
        if line.startswith("train: "):
            return json.loads(line[len("train: "):])["tokens"]
    raise RuntimeError(f"preparation failed:\n{log[-3000:]}")


def bench_prepare(source: Path, work: Path, tokenizer: Path, num_proc: int, tag: str, memory: bool = True) -> dict:
    """Prepare `source` from scratch; `memory` False: a throughput run (RSS sampled once a second, no PSS)."""
    cache = work / f"cache-{tag}"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    r = run_sampled(prepare_cmd(source, cache, tokenizer, num_proc), **({} if memory else {"interval": 1.0, "pss": False}))
    if r["rc"] != 0:
        raise RuntimeError(r["log"][-3000:])
    manifest = json.loads(next(cache.glob("blocks-*/manifest.json")).read_text())
    tokens = manifest["totals"]["train"]["tokens"] + manifest["totals"]["validation"]["tokens"]
    return {"tokens": tokens, "bytes": manifest["totals"]["train"]["bytes"] + manifest["totals"]["validation"]["bytes"],
            "prep_seconds": manifest["seconds"], "tokens_per_s": tokens / manifest["seconds"],
            "peak_rss_gb": r["peak_rss"] / 1e9, "peak_pss_gb": r["peak_pss"] / 1e9, "wall": r["seconds"]}


def first_step(source: Path, work: Path, tokenizer: Path, streaming: bool, cache: Path) -> dict:
    """Seconds from launch to the first optimizer step's log line of the scaled gpt_125m recipe."""
    out = work / f"run-{'stream' if streaming else 'prep'}-{time.time_ns()}"
    args = ["--config", "recipes/gpt_125m.yaml", "--data.source", str(source / "*.jsonl"), "--data.hub_config", "null",
            "--data.streaming", "true" if streaming else "false", "--data.cache_dir", str(cache),
            "--tokenizer.name_or_path", str(tokenizer), "--model.hidden_size", "64", "--model.num_heads", "2",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--bf16", "false",
            "--optim", "adamw_torch", "--max_steps", "20", "--logging_steps", "1", "--eval_strategy", "no",
            "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
            "--output_dir", str(out)]
    r = run_sampled([sys.executable, "scripts/train.py", *args], watch="'loss'")
    if r["first"] is None:
        raise RuntimeError(f"no optimizer step:\n{r['log'][-4000:]}")
    subprocess.run(["rm", "-rf", str(out)])
    return {"seconds": r["first"], "peak_rss_gb": r["peak_rss"] / 1e9, "args": args}


def dataloader_wait(extra: list[str], steps: int, work: Path) -> dict:
    """Share of wall time between optimizer steps (batch fetching) at the tiny recipe, in-process."""
    import transformers

    import growth.trainer
    from growth.run import main

    gaps, marks = [], {}

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if "end" in marks:
                gaps.append(time.perf_counter() - marks["end"])
            marks.setdefault("first", time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            marks["end"] = time.perf_counter()

    original = growth.trainer.enable_growth

    def enable(trainer, *a, **k):
        trainer = original(trainer, *a, **k)
        trainer.add_callback(Clock())
        return trainer

    growth.trainer.enable_growth = enable
    try:
        code = main(["--config", str(ROOT / "recipes" / "tiny.yaml"), "--max_steps", str(steps), "--eval_strategy", "no",
                     "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps",
                     str(steps), "--output_dir", str(work / f"tiny-{time.time_ns()}"), *extra])
    finally:
        growth.trainer.enable_growth = original
    if code != 0 or not gaps:
        raise RuntimeError(f"tiny run failed ({code})")
    total = marks["end"] - marks["first"]
    return {"share": sum(gaps) / total, "steps": steps, "seconds": total}


def smoke(work: Path) -> list[dict]:
    """The same code paths at toy sizes, in this process: preparation at 1 and 2 processes and a
    few streaming steps of the tiny recipe on the generated corpus (not measurements)."""
    import psutil

    from growth.data import DataConfig, TokenizerConfig, build_datasets, build_tokenizer, load_documents

    corpus = generate_corpus(work / "corpus", 0.0005, files=4)
    texts = load_documents(DataConfig(source=str(corpus / "*.jsonl"), cache_dir=str(work / "c")))[0]
    tok = build_tokenizer(TokenizerConfig(train_bpe=True, vocab_size=300, train_bytes=300_000), texts, str(work / "c"))
    out = []
    for n in (1, 2):
        start = time.time()
        train, _ = build_datasets(DataConfig(source=str(corpus / "*.jsonl"), num_proc=n, max_eval_tokens=1024,
                                             cache_dir=str(work / f"c{n}")), tok)
        out.append(result(f"smoke: prepared blocks, {n} processes", len(train), note=f"{time.time() - start:.1f} s"))
    out.append(result("smoke: process tree RSS (GB)", tree_rss(os.getpid()) / 1e9))
    wait = dataloader_wait(["--data.source", str(corpus / "*.jsonl"), "--data.streaming", "true",
                            "--data.validation_fraction", "0", "--model.hidden_size", "32", "--tokenizer.vocab_size", "300", "--data.cache_dir",
                            str(work / "c"), "--dataloader_num_workers", "1"], 3, work)
    out.append(result("smoke: dataloader wait / step time, streaming", wait["share"]))
    assert psutil and all(r["value"] > 0 for r in out[:2])
    return out


def result(metric, value, target=None, status="INFO", noise=None, note=""):
    return {"metric": metric, "value": float(value), "target": target, "status": status, "noise": noise, "note": note}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=1.0, help="size of the generated corpus (GB of text)")
    p.add_argument("--small_mb", type=float, default=100, help="the smaller corpus for the RSS comparison (MB)")
    p.add_argument("--rss_gb", default="2",
                   help="comma-separated larger corpora (GB of text) whose preparation's peak RSS is measured besides "
                        "--small_mb and --gb; the largest is generated and the others are its slices")
    p.add_argument("--slice_mb", type=float, default=100, help="corpus for the 1-vs-2-worker throughput (MB)")
    p.add_argument("--tiny_steps", type=int, default=60, help="steps of the tiny recipe for the dataloader wait")
    p.add_argument("--work", default=str(ROOT / ".cache" / "bench_data"), help="corpus and caches go here")
    p.add_argument("--json", metavar="PATH", help="write the results (scripts/bench.py convention)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a temp dir: checks the script works")
    args = p.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            results = smoke(Path(tmp))
        for r in results:
            print(f"{r['metric']}: {r['value']:.4g} {r['note']}")
        if args.json:
            Path(args.json).write_text(json.dumps({"name": "bench_data", "command": "python scripts/bench_data.py --smoke",
                                                   "results": results}, indent=2))
        print("smoke: ok")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load = lambda: os.getloadavg()[0]  # noqa: E731
    results, t0 = [], time.time()
    rss_gb = sorted({args.gb, *(float(g) for g in args.rss_gb.split(",") if g)})
    big = rss_gb[-1]
    print(f"[bench_data] generating {big} GB corpus in {work} (load {load():.1f})", flush=True)
    largest = generate_corpus(work / f"corpus-{big}gb", big)
    sliced = lambda mb: slice_corpus(largest, work / f"corpus-{mb:g}mb-of-{big:g}gb", mb)  # noqa: E731
    corpora = {g: largest if g == big else sliced(g * 1000) for g in rss_gb}
    corpus = corpora[args.gb]
    small = sliced(args.small_mb)
    piece = sliced(args.slice_mb)

    from growth.data import build_tokenizer, TokenizerConfig, DataConfig, load_documents

    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        texts = load_documents(DataConfig(source=str(small / "*.jsonl"), cache_dir=str(work / "c")))[0]
        tok = build_tokenizer(TokenizerConfig(train_bpe=True, vocab_size=8192, train_bytes=5_000_000), texts,
                              str(work / "c"))
        tok.save_pretrained(tok_dir)

    loads = []
    speed = {}
    for n in (1, 2):
        loads.append(load())
        speed[n] = bench_prepare(piece, work, tok_dir, n, f"speed{n}", memory=False)
        print(f"[bench_data] prepare {args.slice_mb} MB, num_proc {n}: {speed[n]['tokens_per_s'] / 1e6:.2f}M tokens/s "
              f"(load {loads[-1]:.1f})", flush=True)
    ratio = speed[2]["tokens_per_s"] / speed[1]["tokens_per_s"]
    busy = max(loads) > 2.5  # another job on the 2 cores: the ratio says nothing about our scaling
    results += [result("prepare tokens/s, 1 process", speed[1]["tokens_per_s"], note=f"{args.slice_mb} MB slice"),
                result("prepare tokens/s, 2 processes", speed[2]["tokens_per_s"]),
                result("prepare speedup 2 vs 1 processes", ratio, f">= {SPEEDUP_TARGET}",
                       "NOISE" if busy and ratio < SPEEDUP_TARGET else ("PASS" if ratio >= SPEEDUP_TARGET else "FAIL"),
                       note=f"load average {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores")]

    sizes = [("small", small, args.small_mb), *((f"{g:g}gb", corpora[g], g * 1000) for g in rss_gb)]
    for tag, src, mb in sizes:
        r = bench_prepare(src, work, tok_dir, 2, f"rss-{tag}")
        print(f"[bench_data] prepare {mb:.0f} MB: peak RSS {r['peak_rss_gb']:.2f} GB (PSS {r['peak_pss_gb']:.2f}), "
              f"{r['tokens'] / 1e6:.0f}M tokens "
              f"in {r['prep_seconds']:.0f} s (load {load():.1f})", flush=True)
        results.append(result(f"prepare peak RSS (GB), {mb:.0f} MB corpus", r["peak_rss_gb"], f"< {RSS_TARGET_GB}",
                              "PASS" if r["peak_rss_gb"] < RSS_TARGET_GB else "FAIL",
                              note=f"{r['tokens'] / 1e6:.0f}M tokens, {r['prep_seconds']:.0f} s, process tree, summed"))
        results.append(result(f"prepare peak PSS (GB), {mb:.0f} MB corpus", r["peak_pss_gb"],
                              note="process tree, shared pages split among the processes"))

    cache = work / "cache-first-step"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    cold = first_step(small, work, tok_dir, False, cache)  # preparation included
    results.append(result("first step (s), prepared, cold cache", cold["seconds"],
                          note=f"{args.small_mb} MB corpus: preparation included"))
    warm = first_step(small, work, tok_dir, False, cache)
    results.append(result("first step (s), prepared, cache ready", warm["seconds"], note="after scripts/prepare_data.py"))
    print(f"[bench_data] first step, prepared: {cold['seconds']:.1f} s cold, {warm['seconds']:.1f} s cache ready",
          flush=True)
    stream = first_step(corpus, work, tok_dir, True, work / "cache-stream")
    results.append(result("first step (s), streaming", stream["seconds"], note=f"{args.gb} GB corpus, 2 workers"))
    print(f"[bench_data] first step, streaming: {stream['seconds']:.1f} s", flush=True)

    # The final evaluation is not measured: a small eval set keeps it short.
    extra = ["--data.cache_dir", str(work / "cache-tiny"), "--data.max_eval_tokens", "2048"]
    wait = dataloader_wait(extra, args.tiny_steps, work)
    results.append(result("dataloader wait / step time, tiny recipe", wait["share"], f"< {WAIT_TARGET}",
                          "PASS" if wait["share"] < WAIT_TARGET else "FAIL", note=f"{wait['steps']} steps, prepared"))
    print(f"[bench_data] dataloader wait at the tiny recipe: {wait['share']:.2%} of step time", flush=True)

    print(f"\n| metric | value | target | status | note |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['metric']} | {r['value']:.4g} | {r['target'] or ''} | {r['status']} | {r['note']} |")
    print(f"(load average now {load():.1f}; {time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"name": "bench_data", "command": " ".join(["python", "scripts/bench_data.py",
                                                                                       *(argv or sys.argv[1:])]),
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
