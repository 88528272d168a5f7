"""Reproduce "Stacking as Accelerated Gradient Descent" (Agarwal, Awasthi, Kale, Zhao, 2024) on a CPU.

    python eval/paper/reproduce.py --out out/paper            # kappa 10 .. 1e4, 5 seeds: a few minutes on 2 cores
    python eval/paper/reproduce.py --out out/paper --quick    # kappa 10 .. 1e3, 3 seeds: well under a minute
    python eval/paper/reproduce.py --out /tmp/p --kappas 10 100 --seeds 2   # any smaller sweep
    python eval/paper/reproduce.py --smoke                    # kappa 10, 100, 2 seeds, into a temp dir (seconds)

Stagewise training adds one component per stage and trains only it, for a few gradient steps, from
an initialisation: zero, random, a copy of the previous component, a copy scaled by Nesterov's beta,
or a copy scaled by Nesterov's schedule (t-1)/(t+2). The experiments live in eval/paper/theory.py; this
script runs them, checks the exact correspondence with explicit GD / Nesterov, and writes into --out:

  paper_results.json      per setting and method: the fitted exponent of stages-to-target against
                          kappa (mean and std over seeds, and per seed), the stages per kappa and
                          seed (null = not reached within the cap), for both counts below; the
                          stagewise-vs-explicit equivalence check; the configuration and timings
  paper_table.md          the same as Markdown tables
  paper_curves.{png,svg}  relative excess loss against stage at one kappa, every method, one seed
  paper_rates.{png,svg}   stages to target against kappa on log-log axes, with fitted exponents

Two counts per run: "reach" is the first stage with relative excess <= target; "stay" is the
stage after which it stays below (momentum makes the loss oscillate, so it can dip below the
target and come back). Settings: least squares (1 and 4 inner steps per stage), logistic
regression, and deep linear residual networks (with explicit functional GD / Nesterov and GD on
the full-depth network as references).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python eval/paper/reproduce.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from eval.paper import theory

# Exponent of stages-to-target in kappa that the theory predicts (first-order, constant momentum).
THEORY = {
    "zero": "1 (gradient descent)",
    "random": "1 (noisy gradient descent)",
    "copy": "1 (momentum 1: envelope decays 2x slower than GD)",
    "copy_beta": "1/2 (Nesterov)",
    "copy_schedule": "1/2 (Nesterov, convex schedule)",
    "gd": "1",
    "nesterov": "1/2",
    "full_depth_gd": "1",
}
LABELS = {
    "zero": "zero init",
    "random": "random init",
    "copy": "copy (beta = 1)",
    "copy_beta": "beta-scaled copy (Nesterov beta)",
    "copy_schedule": "copy scaled by (t-1)/(t+2)",
    "gd": "explicit GD on F",
    "nesterov": "explicit Nesterov on F",
    "full_depth_gd": "full-depth network, GD (x: GD steps)",
}
COLORS = {
    "zero": "tab:blue", "random": "tab:cyan", "copy": "tab:red", "copy_beta": "tab:green",
    "copy_schedule": "tab:olive", "gd": "black", "nesterov": "black", "full_depth_gd": "tab:purple",
}

FULL = {"kappas": (10, 30, 100, 300, 1000, 3000, 10000), "seeds": 5, "curve_kappa": 1000, "full_depth_max_kappa": 1000}
QUICK = {"kappas": (10, 100, 1000), "seeds": 3, "curve_kappa": 100, "full_depth_max_kappa": 100}


def sweep_configs(kappas, seeds, target, full_depth_max_kappa) -> dict[str, theory.SweepConfig]:
    common = {"kappas": tuple(float(k) for k in kappas), "seeds": tuple(seeds), "target": target}
    return {
        "least_squares": theory.SweepConfig("least_squares", **common),
        "least_squares_k4": theory.SweepConfig("least_squares", inner_steps=4, **common),
        "logistic": theory.SweepConfig("logistic", **common),
        "residual": theory.SweepConfig(
            "residual", references=theory.REFERENCES, full_depth_max_kappa=full_depth_max_kappa, **common
        ),
    }


def equivalence(kappa: float, seeds, stages: int) -> dict:
    """Max |difference| of relative excess, stagewise (1 inner step) vs the explicit method."""
    out = {}
    for setting in ("least_squares", "logistic"):
        problem = theory.make_problem(setting, kappa, seeds)
        beta = theory.nesterov_beta(problem.kappa_eff)
        pairs = {
            "zero_vs_gd": (theory.stagewise_additive(problem, "zero", max_stages=stages),
                           theory.gradient_descent(problem, stages)),
            "copy_beta_vs_nesterov": (theory.stagewise_additive(problem, "copy_beta", max_stages=stages, beta=beta),
                                      theory.nesterov(problem, stages, beta)),
            "copy_schedule_vs_nesterov_schedule": (
                theory.stagewise_additive(problem, "copy_schedule", max_stages=stages),
                theory.nesterov(problem, stages, lambda t: max(t - 1, 0) / (t + 2))),
            "copy_vs_nesterov_beta_1": (theory.stagewise_additive(problem, "copy", max_stages=stages),
                                        theory.nesterov(problem, stages, lambda t: 1.0 if t > 0 else 0.0)),
        }
        out[setting] = {name: float(np.max(np.abs(a - b))) for name, (a, b) in pairs.items()}
    return {"kappa": kappa, "seeds": list(seeds), "stages": stages, "max_abs_diff_relative_excess": out}


def curves(kappa: float, seed: int, target: float) -> dict[str, dict[str, list[float]]]:
    """Relative excess per stage (one seed) for every method, per plotted setting."""
    out = {}
    for setting in ("least_squares", "logistic", "residual"):
        problem = theory.make_problem(setting, kappa, [seed])
        beta = theory.nesterov_beta(problem.kappa_eff)
        cap = int(40 * float(np.max(problem.kappa_eff))) + 200
        stop = {"target": target / 10, "until": "reach"}  # a decade past the target, to show the tails
        runs = {}
        for init in theory.INITS:
            runs[init] = theory.run_stagewise(problem, init, max_stages=cap, beta=beta,
                                              random_floor=0.1 * target, **stop)
        runs["gd"] = theory.gradient_descent(problem, cap, **stop)
        runs["nesterov"] = theory.nesterov(problem, cap, theory.nesterov_beta(theory.reference_kappa(problem)), **stop)
        if setting == "residual":
            depth = theory.stages_to_target(runs["copy_beta"], target)[0] or 32
            runs["full_depth_gd"] = theory.full_depth_gd(problem, depth, max_steps=cap, **stop)
        out[setting] = {name: rel[0].tolist() for name, rel in runs.items()}
    return out


def _median(values):
    reached = [v for v in values if v is not None]
    return float(np.median(reached)) if reached else None


def flatten(sweep: dict, cfg: theory.SweepConfig) -> dict:
    """The JSON record of one setting: per method, exponent and stages to target per kappa."""
    methods = {}
    for name, entry in sweep["methods"].items():
        rec = {"theory_exponent": THEORY[name]}
        for count, prefix in (("reach", ""), ("stay", "stay_")):
            fit = entry["fit"][count]
            rec[f"{prefix}exponent"] = fit["mean"]
            rec[f"{prefix}exponent_std"] = fit["std"]
            rec[f"{prefix}exponents_per_seed"] = fit["exponents"]
            rec[f"{prefix}stages_to_target"] = entry[count]
            rec[f"{prefix}stages_to_target_median"] = {k: _median(v) for k, v in entry[count].items()}
            rec[f"{prefix}not_reached"] = fit["not_reached"]
        rec["cap"] = entry["cap"]
        if "depth" in entry:
            rec["depth"] = entry["depth"]
        methods[name] = rec
    return {
        "setting": cfg.setting, "inner_steps": cfg.inner_steps, "target": cfg.target,
        "kappas": list(cfg.kappas), "seeds": list(cfg.seeds),
        "kappa_eff": sweep["kappa_eff"], "beta": sweep["beta"], "methods": methods,
    }


def _fmt_exp(mean, std) -> str:
    return "n/a" if mean is None else f"{mean:.2f} ± {std:.2f}"


def _fmt_stages(values) -> str:
    med = _median(values)
    missing = sum(v is None for v in values)
    if med is None:
        return f"not reached ({missing}/{len(values)})"
    text = f"{med:.0f}"
    return text + (f" ({missing}/{len(values)} n/r)" if missing else "")


def table(results: dict) -> str:
    lines = [
        "# Stacking as accelerated gradient descent: measured rates",
        "",
        f"Target: relative excess loss <= {results['target']:g}. Exponent: least-squares slope of log(stages)",
        "on log(kappa), fitted per seed; mean ± std over seeds. Stages: median over seeds of the first stage at",
        "or below the target (\"reach\"); n/r = not reached within the cap. \"stay\" is the stage after which",
        "the loss stays below the target. full_depth_gd counts gradient steps of the whole network.",
        "",
    ]
    for name, rec in results["settings"].items():
        kappas = [f"{k:g}" for k in rec["kappas"]]
        lines += [
            f"## {name} (inner steps per stage: {rec['inner_steps']}, seeds: {len(rec['seeds'])})",
            "",
            "| method | theory | exponent (reach) | exponent (stay) | " + " | ".join(f"κ={k}" for k in kappas) + " |",
            "|---|---|---|---|" + "---|" * len(kappas),
        ]
        for method, m in rec["methods"].items():
            cells = [_fmt_stages(m["stages_to_target"][k]) if k in m["stages_to_target"] else "-" for k in kappas]
            lines.append(
                f"| {method} | {m['theory_exponent']} | {_fmt_exp(m['exponent'], m['exponent_std'])} | "
                f"{_fmt_exp(m['stay_exponent'], m['stay_exponent_std'])} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    eq = results["equivalence"]
    lines += [
        f"## Stagewise (1 inner step) vs explicit methods, kappa = {eq['kappa']:g}, {eq['stages']} stages",
        "",
        "Max |difference| of the relative excess loss over all stages and seeds:",
        "",
        "| setting | " + " | ".join(next(iter(eq["max_abs_diff_relative_excess"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(eq["max_abs_diff_relative_excess"].values()))),
    ]
    for setting, diffs in eq["max_abs_diff_relative_excess"].items():
        lines.append(f"| {setting} | " + " | ".join(f"{v:.1e}" for v in diffs.values()) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(data: dict, kappa: float, target: float, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(5.2 * len(data), 4.2), constrained_layout=True)
    for ax, (setting, runs) in zip(axes, data.items()):
        for name, rel in runs.items():
            explicit = name in theory.REFERENCES
            # ~2000 points spread evenly on the log x axis keep the files small and plotting fast.
            idx = np.unique(np.geomspace(1, len(rel), 2000).astype(int)) - 1
            ax.plot(idx + 1, np.asarray(rel)[idx], color=COLORS[name], lw=1.0 if explicit else 1.8,
                    ls={"gd": "--", "nesterov": ":"}.get(name, "-"), label=LABELS[name], zorder=3 if explicit else 2)
        ax.axhline(target, color="grey", lw=0.8, ls="-.")
        ax.set(xscale="log", yscale="log", xlabel="stage + 1", ylabel="relative excess loss",
               title=f"{setting}, κ = {kappa:g}", ylim=(target / 30, 3))
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, loc="lower left")  # the last panel (residual) has every method
    _save(fig, out / "paper_curves")


def plot_rates(results: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    settings = results["settings"]
    fig, axes = plt.subplots(1, len(settings), figsize=(4.8 * len(settings), 4.4), constrained_layout=True)
    for ax, (name, rec) in zip(axes, settings.items()):
        for method, m in rec["methods"].items():
            series = [("", m["stages_to_target"], m["exponent"], m["exponent_std"], "-o")]
            if method == "copy":  # its first hit is an oscillation's dip: show when it stays below too
                series.append((", stays below", m["stay_stages_to_target"], m["stay_exponent"], m["stay_exponent_std"], ":s"))
            for suffix, stages, exp, std, style in series:
                ks, med, lo, hi = [], [], [], []
                for k, v in stages.items():
                    reached = [x for x in v if x is not None]
                    if reached:
                        ks.append(float(k))
                        med.append(np.median(reached))
                        lo.append(np.median(reached) - min(reached))
                        hi.append(max(reached) - np.median(reached))
                if not ks:
                    continue
                ax.errorbar(ks, med, yerr=[lo, hi], fmt=style, ms=3.5, lw=1.2, capsize=2, color=COLORS[method],
                            mfc="none" if suffix else COLORS[method],
                            label=f"{method}{suffix}: {_fmt_exp(exp, std)}")
        ks = np.array(rec["kappas"])
        for slope, method, ls in ((0.5, "copy_beta", (0, (1, 3))), (1.0, "zero", (0, (5, 5)))):
            first = rec["methods"].get(method, {}).get("stages_to_target_median", {}).get(f"{ks[0]:g}")
            if first:  # guide of the predicted slope through the method's first point
                ax.plot(ks, first * (ks / ks[0]) ** slope, color="grey", lw=0.8, ls=ls)
        ax.set(xscale="log", yscale="log", xlabel="condition number κ", ylabel="stages to target")
        ax.set_title(f"{name}\n(grey: slopes 1/2 and 1 through copy_beta, zero)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, loc="upper left")
    _save(fig, out / "paper_rates")


def _save(fig, stem: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(stem.with_suffix(".png"), dpi=130)
    fig.savefig(stem.with_suffix(".svg"), metadata={"Date": None})  # no timestamp: reruns give equal files
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="output directory (created; required unless --smoke)")
    p.add_argument("--quick", action="store_true", help=f"smaller sweep: kappas {QUICK['kappas']}, {QUICK['seeds']} seeds")
    p.add_argument("--kappas", type=float, nargs="+", help="condition numbers to sweep (overrides the preset)")
    p.add_argument("--seeds", type=int, help="number of seeds, 0 .. N-1 (overrides the preset)")
    p.add_argument("--target", type=float, default=1e-3, help="relative excess loss to reach (default 1e-3)")
    p.add_argument("--smoke", action="store_true", help="kappas 10 and 100, 2 seeds (seconds); without --out into a temp dir, removed after")
    args = p.parse_args(argv)
    if args.smoke:
        args.kappas, args.seeds = args.kappas or [10.0, 100.0], args.seeds or 2
    if args.out is None and not args.smoke:
        p.error("--out is required (or --smoke)")
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def main(argv=None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    args = parse_args(argv)
    if args.out is None:  # --smoke without --out: a temporary directory, removed afterwards
        with tempfile.TemporaryDirectory(prefix="paper_smoke_") as tmp:
            return main([*(argv if argv is not None else sys.argv[1:]), "--out", tmp])
    preset = QUICK if args.quick else FULL
    kappas = tuple(args.kappas) if args.kappas else preset["kappas"]
    seeds = tuple(range(args.seeds if args.seeds is not None else preset["seeds"]))
    curve_kappa = preset["curve_kappa"] if not args.kappas else float(np.median(kappas))
    configs = sweep_configs(kappas, seeds, args.target, preset["full_depth_max_kappa"])
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    results = {
        "paper": "Agarwal, Awasthi, Kale, Zhao (2024), Stacking as Accelerated Gradient Descent",
        "command": "python eval/paper/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "target": args.target,
        "stay_margin": theory.STAY_MARGIN,
        "settings": {},
        "seconds": {},
    }
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        results["settings"][name] = flatten(theory.rate_sweep(cfg), cfg)
        results["seconds"][name] = round(time.perf_counter() - t0, 1)
        print(f"[paper] {name}: {results['seconds'][name]} s", flush=True)
    t0 = time.perf_counter()
    results["equivalence"] = equivalence(curve_kappa, seeds, stages=300)
    curve_data = curves(curve_kappa, seeds[0], args.target)
    results["seconds"]["equivalence_and_curves"] = round(time.perf_counter() - t0, 1)
    results["seconds"]["total"] = round(time.perf_counter() - start, 1)

    (args.out / "paper_results.json").write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    (args.out / "paper_table.md").write_text(table(results))
    plot_curves(curve_data, curve_kappa, args.target, args.out)
    plot_rates(results, args.out)
    for name, rec in results["settings"].items():
        summary = ", ".join(f"{m} {_fmt_exp(r['exponent'], r['exponent_std'])}" for m, r in rec["methods"].items())
        print(f"[paper] {name} exponents: {summary}")
    print(f"[paper] wrote {args.out} in {results['seconds']['total']} s")
    return results


if __name__ == "__main__":
    main()
