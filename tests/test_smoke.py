"""Every script under scripts/ and eval/ runs in its --smoke mode and exits 0.

This is the guard that an API change breaking a script fails CI, not a user. Scripts are found,
not listed: every .py file under scripts/ or eval/ with an ``if __name__ == "__main__":`` block
(a package's ``__main__.py`` runs as ``python -m``). Each runs as ``python SCRIPT --smoke`` from
an empty temporary working directory, on CPU (no GPU visible), offline (wandb offline, no hub).
The benchmarks (scripts/bench_*.py) run through ``scripts/bench.py --smoke``, which also checks
that each writes valid ``--json`` results; the other scripts run directly. They run a few at a
time; each one's seconds are printed (``pytest -s``) and named in any failure.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:""", re.M)
TIMEOUT = 600  # per script; a smoke mode takes seconds, this only catches a hang
pytestmark = pytest.mark.slow


def discover() -> list[str]:
    """Repo-relative paths of the runnable scripts under scripts/ and eval/."""
    found = []
    for top in ("scripts", "eval"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if name.endswith(".py") and (name == "__main__.py" or MAIN_GUARD.search(open(path).read())):
                    found.append(os.path.relpath(path, ROOT))
    return found


SCRIPTS = discover()


def command(script: str) -> list[str]:
    if os.path.basename(script) == "__main__.py":  # a package: python -m eval.paper
        return [sys.executable, "-m", os.path.dirname(script).replace(os.sep, ".")]
    return [sys.executable, os.path.join(ROOT, script)]


def smoke_env(script: str) -> dict:
    env = dict(os.environ, WANDB_MODE="offline", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               # One torch thread per process: smoke runs share 2 cores several at a time, and idle
               # OpenMP threads spinning for a busy core cost 2-4x the CPU (eval/study.py: 34 s alone,
               # 125 s beside the others). Nothing here is timed.
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", os.path.join(ROOT, ".cache", "torch_extensions")))
    if os.path.basename(script) == "__main__.py":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return env


def run_script(script: str, extra: list[str], cwd: str) -> dict:
    os.makedirs(cwd, exist_ok=True)
    t0 = time.perf_counter()
    # In its own process group, killed whole on timeout: no launcher or worker may outlive the test.
    proc = subprocess.Popen([*command(script), "--smoke", *extra], cwd=cwd, env=smoke_env(script),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    timer = threading.Timer(TIMEOUT, os.killpg, (proc.pid, signal.SIGKILL))
    timer.start()
    try:
        output = proc.stdout.read()
        # wait4: the script's CPU seconds, its workers' included (less load-dependent than wall time)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        timer.cancel()
        proc.stdout.close()
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc == -signal.SIGKILL and time.perf_counter() - t0 >= TIMEOUT:
        rc, output = None, f"timed out after {TIMEOUT} s\n" + output
    return {"rc": rc, "seconds": time.perf_counter() - t0, "cpu": usage.ru_utime + usage.ru_stime, "output": output}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Run everything once: {script: {"rc", "seconds", "output"}}."""
    base = tmp_path_factory.mktemp("smoke")
    collected = base / "bench.json"
    bench = "scripts/bench.py"
    direct = [s for s in SCRIPTS if s != bench and not re.match(r"scripts/bench_\w+\.py$", s)]
    jobs = max(2, min(4, os.cpu_count() or 1))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:  # bench.py first: it runs the most
        futures = {}
        if bench in SCRIPTS:
            futures[bench] = pool.submit(run_script, bench, ["--jobs", "2", "--json", str(collected)], str(base / "bench"))
        for s in direct:
            futures[s] = pool.submit(run_script, s, [], str(base / s.replace(os.sep, "_")))
        runs = {s: f.result() for s, f in futures.items()}
    if collected.exists():  # each benchmark's own result, from bench.py's collection (written as they finish)
        for b in json.loads(collected.read_text())["benchmarks"]:
            runs[b["script"]] = {"rc": b["returncode"], "seconds": b["seconds"], "error": b["error"],
                                 "output": b.get("output_tail", ""), "cpu": None}
    total = time.perf_counter() - t0
    print(f"\nsmoke runs ({jobs} at a time, {total:.0f} s in all; load average {os.getloadavg()[0]:.1f}):")
    for s, r in sorted(runs.items(), key=lambda kv: -kv[1]["seconds"]):
        cpu = "" if r.get("cpu") is None else f"{r['cpu']:6.1f} s CPU"
        print(f"  {r['seconds']:6.1f} s wall {cpu:>12}  rc {r['rc']}  {s}")
    return runs


def test_discovery_finds_the_scripts():
    for script in ("scripts/train.py", "scripts/bench.py", "scripts/bench_growth.py", "eval/compare.py"):
        assert script in SCRIPTS, (script, SCRIPTS)
    assert "eval/report.py" not in SCRIPTS  # a library module, no __main__ block


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_smoke(script, smoke_runs):
    source = open(os.path.join(ROOT, script)).read()
    assert "--smoke" in source, f"{script} has no --smoke flag (every script under scripts/ and eval/ needs one)"
    run = smoke_runs.get(script)
    bench = smoke_runs.get("scripts/bench.py", {})
    assert run is not None, f"{script} did not run: scripts/bench.py --smoke did not report it " \
                            f"(bench.py: exit {bench.get('rc')} after {bench.get('seconds', 0):.0f} s)"
    lines = run["output"].strip().splitlines()
    # A launcher's traceback ends the output; the worker's own error is earlier: show both.
    # growth.run's refusals are one "error: ..." line on stderr (exit 2), not a traceback: show those too.
    errors = [l for l in lines if re.match(r"\s*(\[rank\d+\]:\s*)?([\w.]*(Error|Exception)\b.*:|error: )", l)][-5:]
    tail = "\n".join(lines[-30:])
    assert run["rc"] == 0 and not run.get("error"), \
        f"`{' '.join(command(script)[1:])} --smoke` failed after {run['seconds']:.0f} s " \
        f"(exit {run['rc']}{': ' + run['error'] if run.get('error') else ''}):\n" \
        f"error lines:\n" + "\n".join(errors) + f"\nlast lines:\n{tail}"
