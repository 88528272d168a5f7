"""Run every benchmark of the project in one go; write docs/benchmarks.md and docs/benchmarks.json.

    python scripts/bench.py                          # all benchmarks (tens of minutes on 2 shared cores)
    python scripts/bench.py --only growth,overhead   # a subset, by name (see --list)
    python scripts/bench.py --smoke                  # every benchmark's --smoke mode, into a temp dir
    make bench                                       # = python scripts/bench.py

Each benchmark is a script ``scripts/bench_*.py`` that accepts ``--json PATH`` (and ``--smoke``)
and writes ``{"name", "command", "results": [{"metric", "value", "target", "status", "noise",
"note"}]}`` with status PASS / FAIL / NOISE (within the measured noise of the target) / INFO (no
target). The known ones run in the order below with the arguments listed; any other
``scripts/bench_*.py`` found later runs too, with ``--json`` only. Each runs in its own process
from an empty temporary working directory; a benchmark that crashes, times out or writes no valid
JSON is recorded as FAIL with its error and the others still run. The report gives, per benchmark,
the command, its results against their targets, the time it took and the load average before and
after (the machine may be shared), and the machine itself.

Exit code: 0 when every benchmark ran and wrote valid results (missed targets are results, not
errors), 1 otherwise. ``--smoke`` writes the report into ``--out`` (default: a temporary
directory, removed unless --keep), never into docs/: its numbers come from tiny sizes.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import datetime
import glob
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATUSES = ("PASS", "FAIL", "NOISE", "INFO")


@dataclass
class Bench:
    name: str
    script: str  # relative to the repo root
    args: list[str] = field(default_factory=list)  # for the full run (the smoke run passes only --smoke)
    what: str = ""


def _literal(script: str, name: str):
    """A module-level constant of ``script`` read without importing it (it may import heavy things)."""
    try:
        with open(os.path.join(ROOT, script)) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def known_benchmarks() -> list[Bench]:
    # One run per distributed backend (fsdp2 joins once that script lists it): a crash, or the suite's
    # budget running out, then costs one backend's numbers, not all of them.
    backends = _literal("scripts/bench_distributed.py", "BACKENDS")
    if not isinstance(backends, (tuple, list)) or not all(isinstance(b, str) for b in backends):
        distributed = [Bench("distributed", "scripts/bench_distributed.py", [], "per backend: growth event over one step, "
                             "post-growth throughput vs fresh, collective bytes")]
    else:
        distributed = [Bench(f"distributed_{b}", "scripts/bench_distributed.py", ["--backends", b],
                             f"{b}: growth event over one step, grown vs fresh throughput, collective bytes") for b in backends]
    return [
        Bench("growth", "scripts/bench_growth.py", [],
              "one growth of a ~50M-parameter llama with AdamW state vs the memcpy floor; peak RSS vs a fresh model"),
        Bench("overhead", "scripts/bench_overhead.py", [],
              "growth machinery between events vs a plain Trainer; DDP find_unused_parameters True vs False"),
        Bench("compile", "scripts/bench_compile.py", [], "torch.compile throughput after growth"),
        *distributed,
        # Last: the longest (a ~1 GB corpus); a --budget that runs out then costs only its numbers.
        Bench("data", "scripts/bench_data.py", [], "data preparation: tokens/s and peak RSS"),
    ]


def all_benchmarks(smoke: bool = False) -> list[Bench]:
    """The known benchmarks whose script exists, then any other scripts/bench_*.py."""
    known = known_benchmarks()
    found = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "scripts", "bench_*.py"))}
    benches = [b for b in known if b.script in found]
    listed = {b.script for b in known}
    if smoke:  # one smoke run per script
        seen: set[str] = set()
        benches = [Bench(os.path.basename(b.script)[len("bench_"):-3], b.script, [], b.what) for b in benches
                   if not (b.script in seen or seen.add(b.script))]
    for script in sorted(found - listed):
        benches.append(Bench(os.path.basename(script)[len("bench_"):-3], script))
    return benches


def missing_known() -> list[Bench]:
    found = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "scripts", "bench_*.py"))}
    return [b for b in known_benchmarks() if b.script not in found]


def select(benches: list[Bench], names: list[str]) -> tuple[list[Bench], list[str]]:
    """Benchmarks named, or prefixed by a name and "_" (``distributed`` selects every backend)."""
    def hit(b, n):
        return b.name == n or b.name.startswith(n + "_")

    return [b for b in benches if any(hit(b, n) for n in names)], [n for n in names if not any(hit(b, n) for b in benches)]


# --- running -------------------------------------------------------------------------------------
def validate(report) -> list[str]:
    """Problems with a benchmark's JSON against the convention (empty: valid)."""
    if not isinstance(report, dict):
        return [f"top level is {type(report).__name__}, not an object"]
    errors = [f"{k!r} missing or not a string" for k in ("name", "command") if not isinstance(report.get(k), str)]
    results = report.get("results")
    if not isinstance(results, list) or not results:
        return errors + ["'results' missing or empty"]
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            errors.append(f"results[{i}] is not an object")
            continue
        if not isinstance(r.get("metric"), str):
            errors.append(f"results[{i}].metric missing or not a string")
        v = r.get("value")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            errors.append(f"results[{i}].value {v!r} is not a number")
        if r.get("status") not in STATUSES:
            errors.append(f"results[{i}].status {r.get('status')!r} is not one of {', '.join(STATUSES)}")
        if r.get("target") is not None and not isinstance(r.get("target"), str):
            errors.append(f"results[{i}].target {r.get('target')!r} is not a string or null")
        n = r.get("noise")
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float))):
            errors.append(f"results[{i}].noise {n!r} is not a number or null")
        if not isinstance(r.get("note", ""), str):
            errors.append(f"results[{i}].note is not a string")
    return errors


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _error_line(text: str) -> str:
    """The most telling line of a crash: the last 'SomethingError: ...' line, else the last line."""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "error")) or line.startswith("error:"):
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


def run_group(cmd: list[str], timeout: float, **kwargs) -> tuple[int | None, str]:
    """(exit code or None on timeout, stdout + stderr). The command runs in its own process group,
    killed whole on timeout: a benchmark's launcher and workers must not outlive it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    except BaseException:  # interrupted: take the benchmark's processes down with us
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return rc, out + ("\n" + err if err else "")


def run_one(bench: Bench, smoke: bool, out_dir: str, timeout: float) -> dict:
    """Run one benchmark script; never raises. Returns its record for the report."""
    json_path = os.path.join(out_dir, f"bench_{bench.name}.json")
    log_path = os.path.join(out_dir, f"bench_{bench.name}.log")
    args = ["--smoke"] if smoke else bench.args
    cmd = [sys.executable, os.path.join(ROOT, bench.script), *args, "--json", json_path]
    shown = " ".join(["python", bench.script, *args, "--json", os.path.basename(json_path)])
    env = dict(os.environ, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(ROOT, ".cache", "torch_extensions"))
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # smoke modes are CPU checks
    record = {"name": bench.name, "script": bench.script, "what": bench.what, "command": shown,
              "load_before": list(os.getloadavg()), "started": _now()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench_{bench.name}_") as cwd:
        rc, output = run_group(cmd, timeout, cwd=cwd, env=env)
    record.update(seconds=time.perf_counter() - t0, load_after=list(os.getloadavg()), returncode=rc)
    with open(log_path, "w") as f:
        f.write(output)
    record["log"] = os.path.basename(log_path)
    error = None
    if rc is None:
        error = f"timed out after {timeout:.0f} s"
    elif rc != 0:
        error = f"exit {rc}: {_error_line(output)}"
    elif not os.path.exists(json_path):
        error = "exited 0 but wrote no --json file"
    report = None
    if error is None:
        try:
            with open(json_path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            error = f"unreadable --json file: {e}"
        else:
            problems = validate(report)
            if problems:
                error = "invalid --json file: " + "; ".join(problems[:5])
                report = None
    record["error"] = error
    record["report"] = report
    if error:
        record["output_tail"] = _tail(output)
        record["status"] = "FAIL"
    else:
        record["status"] = overall([r["status"] for r in report["results"]])
    return record


def overall(statuses: list[str]) -> str:
    for s in ("FAIL", "NOISE", "PASS"):
        if s in statuses:
            return s
    return "INFO"


# --- the report ----------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), platform.processor())
        with open("/proc/meminfo") as f:
            kb = next(int(l.split()[1]) for l in f if l.startswith("MemTotal"))
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        info.setdefault("cpu", platform.processor())
    from importlib import metadata

    versions = {}
    for pkg in ("torch", "transformers", "accelerate", "deepspeed", "datasets"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    gpus = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout
            gpus = [l.strip() for l in out.splitlines() if l.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    info["gpus"] = gpus
    return info


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load(load: list[float]) -> str:
    return " / ".join(f"{x:.1f}" for x in load)


def render(doc: dict) -> str:
    m = doc["machine"]
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "no GPU"
    lines = [
        "# Benchmarks" + (" (smoke: tiny sizes, not measurements)" if doc["smoke"] else ""),
        "",
        f"Generated by `{doc['command']}` (`make bench`) from {doc['started']} to {doc['finished']}, "
        f"commit {doc['revision']}. Do not edit by hand: rerun `make bench`.",
        *[f"Rerun since: {', '.join(u['benchmarks'])} by `{u['command']}` from {u['started']} to {u['finished']}, "
          f"commit {u['revision']} (their sections below are from that run)." for u in doc.get("updates", [])],
        "",
        f"**Machine:** {m.get('cpu', '?')}, {m['cpus']} CPUs ({m['cpus_usable']} usable), "
        f"{m.get('memory_gib', '?')} GiB RAM, {gpu}; {m['platform']}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"**Load average** (1 / 5 / 15 min) at the start {_load(doc['load_start'])}, at the end {_load(doc['load_end'])}: "
        f"with more runnable processes than CPUs, wall-clock ratios carry noise; each benchmark measures its own "
        f"(repeated, alternating order) and says NOISE where a miss is smaller than it.",
        "",
        "Status: **PASS** target met; **FAIL** target missed by more than the measured noise (or the benchmark "
        "crashed: its error is shown); **NOISE** the value is within the measured noise of the target (this run "
        "cannot tell); **INFO** no target. Noise: the spread between repeated measurements of the same thing in "
        "the same run.",
        "",
        "| benchmark | what | status | results | seconds | load before -> after |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for b in doc["benchmarks"]:
        counts = "error" if b["error"] else ", ".join(
            f"{sum(r['status'] == s for r in b['report']['results'])} {s}" for s in STATUSES
            if any(r["status"] == s for r in b["report"]["results"]))
        lines.append(f"| [{b['name']}](#{b['name']}) | {_cell(b['what'])} | **{b['status']}** | {counts} | "
                     f"{b['seconds']:.0f} | {_load(b['load_before'][:1])} -> {_load(b['load_after'][:1])} |")
    for b in doc.get("missing", []):
        lines.append(f"| {b['name']} | {_cell(b['what'])} | not run | `{b['script']}` does not exist yet | | |")
    for b in doc["benchmarks"]:
        lines += ["", f"## {b['name']}", "", f"`{b['command']}` ({b['script']}): {b['seconds']:.0f} s, started "
                  f"{b['started']}, load average {_load(b['load_before'])} before, {_load(b['load_after'])} after.", ""]
        if b["error"]:
            lines += [f"**FAIL: the benchmark did not produce results.** {_cell(b['error'])}", "", "```",
                      b.get("output_tail", ""), "```"]
            continue
        lines += ["| metric | value | target | status | noise | note |", "| --- | --- | --- | --- | --- | --- |"]
        for r in b["report"]["results"]:
            noise = "" if r.get("noise") is None else f"±{100 * r['noise']:.1f}%"
            lines.append(f"| {_cell(r['metric'])} | {_fmt(r['value'])} | {_cell(r.get('target') or '')} | "
                         f"**{r['status']}** | {noise} | {_cell(r.get('note', ''))} |")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--smoke", action="store_true", help="run every benchmark's --smoke mode (seconds each); report into --out")
    p.add_argument("--out", help="directory for benchmarks.md / benchmarks.json and each benchmark's JSON and log "
                                 "(default: docs/ with logs under runs/bench/; with --smoke a temporary directory)")
    p.add_argument("--only", help="comma-separated benchmark names (default: all)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 3600; smoke 600)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole suite: each benchmark may use at most what is left, and one that "
                        "cannot start in time is recorded as not run (FAIL)")
    p.add_argument("--jobs", type=int, default=1,
                   help="benchmarks at a time; >1 only with --smoke (measurements need the machine to themselves)")
    p.add_argument("--keep", action="store_true", help="with --smoke and no --out: keep the temporary directory")
    p.add_argument("--json", metavar="PATH", help="also copy the collected JSON here")
    p.add_argument("--update", action="store_true",
                   help="with --only: rerun those benchmarks and keep every other one's record from the existing "
                        "benchmarks.json (each keeps its own date and command; the report lists the reruns)")
    args = p.parse_args(argv)
    if args.update and not args.only:
        p.error("--update needs --only (which benchmarks to rerun)")
    if args.update and args.smoke:
        p.error("--update is for measurements, not --smoke")
    if args.jobs < 1:
        p.error(f"--jobs must be positive, got {args.jobs}")
    if args.jobs > 1 and not args.smoke:
        p.error("--jobs > 1 needs --smoke: benchmarks running side by side would measure each other")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    benches = all_benchmarks(args.smoke)
    if args.only:
        chosen, unknown = select(benches, [n for n in args.only.split(",") if n])
        if unknown:
            print(f"error: --only: unknown benchmark(s) {', '.join(unknown)}; have {', '.join(b.name for b in benches)}",
                  file=sys.stderr)
            return 2
        benches = chosen
    if args.list:
        for b in benches:
            print(f"{b.name:12s} {b.script:32s} {' '.join(b.args)}")
        for b in missing_known():
            print(f"{b.name:12s} {b.script:32s} (not there yet)")
        return 0

    tmp = None
    if args.out:
        out_dir = logs_dir = os.path.abspath(args.out)
    elif args.smoke:
        tmp = out_dir = logs_dir = tempfile.mkdtemp(prefix="bench_smoke_")
    else:
        out_dir, logs_dir = os.path.join(ROOT, "docs"), os.path.join(ROOT, "runs", "bench")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(logs_dir, exist_ok=True)
    timeout = args.timeout or (600 if args.smoke else 3600)

    command = "python scripts/bench.py" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    kept, previous = [], None
    if args.update:
        path = os.path.join(out_dir, "benchmarks.json")
        if not os.path.exists(path):
            print(f"error: --update: no {path} to update; run the whole suite first", file=sys.stderr)
            return 2
        previous = json.load(open(path))
        rerun = {b.name for b in benches}
        kept = [b for b in previous["benchmarks"] if b["name"] not in rerun]
    doc = {"command": command,
           "smoke": args.smoke, "started": _now(), "revision": git_revision(), "machine": machine(),
           "load_start": list(os.getloadavg()), "benchmarks": [],
           "missing": [] if args.only else [{"name": b.name, "script": b.script, "what": b.what} for b in missing_known()]}
    print(f"[bench] {len(benches)} benchmark(s){' (smoke)' if args.smoke else ''}: {', '.join(b.name for b in benches)}; "
          f"{doc['machine']['cpus']} CPUs, load average {_load(doc['load_start'])}", flush=True)

    def write(final: bool) -> None:
        """The collection so far (also after each benchmark, so a killed suite leaves what it measured)."""
        done = [records[b.name] for b in benches if b.name in records]
        if previous is not None:  # the full suite's order; reruns replace their old records
            new = {r["name"]: r for r in done}
            order = [b.name for b in all_benchmarks()]
            done = sorted([*kept, *new.values()], key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        partial = {**doc, "benchmarks": done, "complete": final}
        partial.setdefault("finished", _now())
        partial.setdefault("load_end", list(os.getloadavg()))
        targets = [os.path.join(out_dir, "benchmarks.json")] + ([args.json] if args.json else [])
        for path in targets:
            with open(path + ".tmp", "w") as f:
                json.dump(partial, f, indent=2)
            os.replace(path + ".tmp", path)
        if final:
            with open(os.path.join(out_dir, "benchmarks.md"), "w") as f:
                f.write(render(partial))

    records: dict[str, dict] = {}

    suite_start = time.perf_counter()

    def one(b: Bench) -> dict:
        left = None if args.budget is None else args.budget - (time.perf_counter() - suite_start)
        if left is not None and left < 10:
            record = {"name": b.name, "script": b.script, "what": b.what, "command": f"python {b.script}",
                      "load_before": list(os.getloadavg()), "load_after": list(os.getloadavg()), "started": _now(),
                      "seconds": 0.0, "returncode": None, "report": None, "status": "FAIL",
                      "error": f"not run: the suite's --budget of {args.budget:.0f} s was spent", "output_tail": ""}
        else:
            record = run_one(b, args.smoke, logs_dir, timeout if left is None else min(timeout, left))
        print(f"[bench] {b.name}: {record['status']} in {record['seconds']:.0f} s"
              + (f" -- {record['error']}" if record["error"] else ""), flush=True)
        records[b.name] = record
        write(final=False)
        return record

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        doc["benchmarks"] = list(pool.map(one, benches))
    doc["finished"], doc["load_end"] = _now(), list(os.getloadavg())
    if previous is not None:
        update = {"command": command, "started": doc["started"], "finished": doc["finished"],
                  "revision": doc["revision"], "benchmarks": [b.name for b in benches]}
        for key in ("command", "started", "finished", "revision", "load_start", "load_end", "missing"):
            doc[key] = previous.get(key, doc.get(key))
        doc["updates"] = [*previous.get("updates", []), update]
    write(final=True)
    failed = [b["name"] for b in doc["benchmarks"] if b["error"]]
    print(f"[bench] wrote {os.path.join(out_dir, 'benchmarks.md')} and benchmarks.json; "
          + (f"crashed or no valid results: {', '.join(failed)}" if failed else "every benchmark produced results"),
          flush=True)
    if tmp and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
