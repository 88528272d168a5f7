"""A wandb Report that compares growth schedules, built with `wandb-workspaces`.

    python eval/dashboard.py --entity my-team --project growth                    # every run of the project
    python eval/dashboard.py --entity my-team --project growth --group stack_last --group baseline
    python eval/dashboard.py --entity my-team --project growth --no-table          # panels only, no history read
    python eval/dashboard.py --smoke                                               # build offline, print it, save nothing

What it creates (and prints the URL of): a report in ENTITY/PROJECT with

- a run set of the project's runs (only the wandb groups given by --group, if any), grouped by
  wandb group, which is the schedule label (growth/reporting.py sets WANDB_RUN_GROUP to it), so
  every panel shows one line per schedule: the mean over its seeds with a min-max band;
- eval loss against training FLOPs (`train/compute/flops`) and against training tokens
  (`train/compute/tokens`), and the training loss against FLOPs;
- growth events: the depth against FLOPs (on the same x as the loss panels, each step up is an
  event) and against the optimizer step, and the training-loss change at each event
  (`growth/loss_change`, logged by growth/reporting.py at the event's FLOPs). wandb line plots
  cannot draw vertical markers, so the events are these panels plus the table below;
- the matched-loss table of eval/compare.py (FLOPs to reach the baseline's final eval loss,
  FLOPs saved, loss at the baseline's compute, differences against the seed spread, loss jumps at
  growth events), computed from the same runs through wandb's public API, as a Markdown block.

Saving needs a wandb login (WANDB_API_KEY) and network. --smoke builds the same report object
from synthetic runs (eval/compare.py --smoke's) without touching the network.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python eval/dashboard.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from eval.compare import Analysis, analyze, load_run, load_wandb_runs, md_differences, md_jumps, md_label_table, md_target, write_smoke_runs

# History keys as the HF WandbCallback logs our metrics (see eval/compare.py WANDB_KEYS).
FLOPS, TOKENS, STEP = "train/compute/flops", "train/compute/tokens", "train/global_step"
EVAL_LOSS, TRAIN_LOSS, DEPTH, LOSS_CHANGE = "eval/loss", "train/loss", "train/growth/depth", "growth/loss_change"
GROUP = "Group"  # the run attribute wandb-workspaces groups by (the run's wandb group = our label)


def panels() -> list:
    """The line plots, each grouped by schedule: mean over seeds, min-max band."""
    import wandb_workspaces.reports.v2 as wr

    grouped = {"groupby": GROUP, "groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"}

    def plot(title, x, y, title_x, title_y, row, col, **kw):
        return wr.LinePlot(title=title, x=x, y=[y], title_x=title_x, title_y=title_y,
                           layout=wr.Layout(x=12 * col, y=8 * row, w=12, h=8), **grouped, **kw)

    return [
        plot("eval loss vs training FLOPs", FLOPS, EVAL_LOSS, "training FLOPs", "eval loss (nats/token)", 0, 0),
        plot("eval loss vs training tokens", TOKENS, EVAL_LOSS, "training tokens", "eval loss (nats/token)", 0, 1),
        plot("depth vs training FLOPs (each step up is a growth event)", FLOPS, DEPTH, "training FLOPs", "layers", 1, 0),
        plot("depth over training steps", STEP, DEPTH, "optimizer step", "layers", 1, 1),
        plot("training loss vs training FLOPs", FLOPS, TRAIN_LOSS, "training FLOPs", "training loss", 2, 0),
        plot("training-loss change at each growth event", FLOPS, LOSS_CHANGE, "training FLOPs at the event",
             "loss after - loss before", 2, 1),
    ]


def group_filter(groups: list[str] | None) -> str:
    """A Runset filter expression keeping the given wandb groups ("" keeps every run)."""
    if not groups:
        return ""
    for g in groups:
        if "'" in g:
            raise ValueError(f"--group: a group name with a quote cannot be filtered on, got {g!r}")
    if len(groups) == 1:
        return f"Group = '{groups[0]}'"
    return "Group in [" + ", ".join(f"'{g}'" for g in groups) + "]"


def table_markdown(a: Analysis, source: str) -> str:
    lines = [f"## Matched loss ({source})", "", md_target(a), "", "### Per label", ""]
    lines += md_label_table(a)
    lines += ["", "### Differences between labels", ""] + md_differences(a)
    lines += ["", "### Loss jumps at growth events", ""] + [l for l in md_jumps(a) if "growth_jumps.csv" not in l]
    lines += ["", "Definitions: `python eval/compare.py --help`. Recompute: `python eval/compare.py "
              f"--wandb {source} --out out/compare`."]
    return "\n".join(lines)


def build_report(entity: str, project: str, groups: list[str] | None = None, analysis: Analysis | None = None,
                 title: str | None = None):
    """The report object (nothing is sent): run set, panels and, given an analysis, its table."""
    import wandb_workspaces.reports.v2 as wr

    scope = f"{entity}/{project}" + (f" (groups {', '.join(groups)})" if groups else "")
    runset = wr.Runset(entity=entity, project=project, name="growth schedules", filters=group_filter(groups),
                       groupby=["group"])
    blocks = [
        wr.MarkdownBlock(text=(
            f"Growth schedules in `{scope}`, one line per schedule (wandb group = the recipe's `label`): "
            "the mean over its seeds, with a min-max band. x is training compute as counted by the run "
            "(`compute/flops` for the depth in force at each step), not wall time.")),
        wr.PanelGrid(runsets=[runset], panels=panels()),
    ]
    if analysis is not None:
        blocks.append(wr.MarkdownBlock(text=table_markdown(analysis, f"{entity}/{project}")))
    return wr.Report(entity=entity, project=project, title=title or f"Growth schedules: {project}",
                     description="Eval loss against compute, growth events and matched-loss savings per schedule.",
                     blocks=blocks, width="fluid")


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entity", help="wandb entity (user or team) that owns the project")
    p.add_argument("--project", help="wandb project holding the runs")
    p.add_argument("--group", action="append", default=None, help="only this wandb group (schedule label); repeatable")
    p.add_argument("--baseline", default=None, help="label of the matched-loss target (as eval/compare.py --baseline)")
    p.add_argument("--title", default=None, help="report title (default: 'Growth schedules: PROJECT')")
    p.add_argument("--no-table", action="store_true", help="panels only: do not read the runs' history for the table")
    p.add_argument("--smoke", action="store_true", help="build the report offline from synthetic runs, print it, do not save")
    args = p.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="dashboard_smoke_") as tmp:
            runs = [load_run(d) for d in write_smoke_runs(Path(tmp))]
        report = build_report("smoke-entity", "smoke-project", args.group, analyze(runs, args.baseline))
        grid = report.blocks[1]
        print(f"report {report.title!r}: {len(report.blocks)} blocks, {len(grid.panels)} panels grouped by "
              f"{grid.runsets[0].groupby}: " + "; ".join(f"{pl.y[0]} vs {pl.x}" for pl in grid.panels))
        print(report.blocks[2].text)
        return report
    if not args.entity or not args.project:
        p.error("--entity and --project are required (or --smoke)")
    try:
        group_filter(args.group)  # a bad group name fails before any network call
        path = f"{args.entity}/{args.project}"
        analysis = None if args.no_table else analyze(
            [r for g in (args.group or [None]) for r in load_wandb_runs(path, g)], args.baseline)
        report = build_report(args.entity, args.project, args.group, analysis, args.title)
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    report.save()
    print(f"saved report: {report.url}")
    return report


if __name__ == "__main__":
    main()
