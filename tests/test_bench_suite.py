"""scripts/bench.py: collects benchmark scripts' --json results, and records a crash or a bad
result file as FAIL with its error instead of stopping (real subprocesses, tiny scripts)."""

import importlib.util
import json
import os
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_suite", os.path.join(ROOT, "scripts", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("import json, sys\nout = sys.argv[sys.argv.index('--json') + 1]\n" + textwrap.dedent(body))
    return str(path)


GOOD = """
json.dump({"name": "x", "command": "python x.py", "results": [
    {"metric": "speed ratio", "value": 1.5, "target": "<= 2", "status": "PASS", "noise": 0.1, "note": "fine"},
    {"metric": "memory", "value": 1.2, "target": "<= 1.05", "status": "FAIL", "noise": None, "note": ""}]}, open(out, "w"))
"""


def test_results_crashes_and_bad_json(tmp_path):
    bench = load_bench()
    benches = [bench.Bench("good", script(tmp_path, "good.py", GOOD)),
               bench.Bench("crash", script(tmp_path, "crash.py", "raise ValueError('--hidden must be positive, got 0')")),
               bench.Bench("badjson", script(tmp_path, "bad.py", "json.dump({'name': 'x', 'command': 'c', 'results': "
                                                                  "[{'metric': 'm', 'value': 'fast', 'status': 'OK'}]}, open(out, 'w'))")),
               bench.Bench("nojson", script(tmp_path, "nojson.py", "print('forgot')"))]
    records = [bench.run_one(b, smoke=False, out_dir=str(tmp_path), timeout=60) for b in benches]
    good, crash, badjson, nojson = records

    assert good["error"] is None and good["status"] == "FAIL"  # one target missed: the benchmark's status is FAIL
    assert [r["status"] for r in good["report"]["results"]] == ["PASS", "FAIL"]
    assert crash["status"] == "FAIL" and crash["returncode"] == 1
    assert "ValueError: --hidden must be positive, got 0" in crash["error"]
    assert badjson["status"] == "FAIL" and "value 'fast' is not a number" in badjson["error"]
    assert "status 'OK' is not one of" in badjson["error"]
    assert nojson["status"] == "FAIL" and "wrote no --json file" in nojson["error"]
    for r in records:
        assert len(r["load_before"]) == 3 and r["seconds"] > 0

    doc = {"command": "python scripts/bench.py", "smoke": False, "started": "t0", "finished": "t1", "revision": "abc",
           "machine": bench.machine(), "load_start": [1.0, 1.0, 1.0], "load_end": [2.0, 2.0, 2.0],
           "benchmarks": records, "missing": [{"name": "later", "script": "scripts/bench_later.py", "what": "w"}]}
    md = bench.render(doc)
    json.dumps(doc)  # what bench.py writes as benchmarks.json
    assert f"{os.cpu_count()} CPUs" in md and "Load average" in md
    assert "| speed ratio | 1.5 | <= 2 | **PASS** | ±10.0% | fine |" in md
    assert "| memory | 1.2 | <= 1.05 | **FAIL** |" in md
    assert "ValueError: --hidden must be positive, got 0" in md  # the crash is shown with its error
    assert "`scripts/bench_later.py` does not exist yet" in md


def test_every_bench_script_is_collected():
    bench = load_bench()
    scripts = {b.script for b in bench.all_benchmarks()}
    on_disk = {os.path.join("scripts", f) for f in os.listdir(os.path.join(ROOT, "scripts")) if f.startswith("bench_") and f.endswith(".py")}
    assert scripts == on_disk
    assert "scripts/bench_growth.py" in scripts and "scripts/bench_overhead.py" in scripts


def test_update_reruns_one_benchmark_and_keeps_the_others(tmp_path, monkeypatch):
    """--only NAME --update: NAME's record is replaced, every other one kept as it was measured (its
    own date), the report names the rerun; without a previous report it refuses."""
    bench = load_bench()
    ratio = tmp_path / "ratio.txt"
    ratio.write_text("1.5")
    body = GOOD.replace('"value": 1.5', '"value": float(open(%r).read())' % str(ratio))
    benches = [bench.Bench("a", script(tmp_path, "a.py", GOOD)), bench.Bench("b", script(tmp_path, "b.py", body))]
    monkeypatch.setattr(bench, "all_benchmarks", lambda smoke=False: benches)
    monkeypatch.setattr(bench, "missing_known", lambda: [])
    out = tmp_path / "out"
    assert bench.main(["--out", str(out), "--only", "b", "--update"]) == 2  # nothing to update yet
    bench.main(["--out", str(out)])
    first = json.load(open(out / "benchmarks.json"))
    ratio.write_text("1.7")
    bench.main(["--out", str(out), "--only", "b", "--update"])
    doc = json.load(open(out / "benchmarks.json"))
    assert [b["name"] for b in doc["benchmarks"]] == ["a", "b"]
    assert doc["benchmarks"][0] == first["benchmarks"][0]  # a: untouched, its own date
    assert doc["benchmarks"][1]["report"]["results"][0]["value"] == 1.7
    assert doc["started"] == first["started"] and [u["benchmarks"] for u in doc["updates"]] == [["b"]]
    md = (out / "benchmarks.md").read_text()
    assert "Rerun since: b by `python scripts/bench.py" in md and "| speed ratio | 1.7 |" in md and "| speed ratio | 1.5 |" in md
