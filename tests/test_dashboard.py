"""eval/dashboard.py: the wandb Report object, built offline (no API calls), checked for its panels,
the history keys they plot, the grouping by schedule and the matched-loss table."""

from pathlib import Path

import pytest

import wandb_workspaces.reports.v2 as wr  # the eval extra installs wandb-workspaces
import wandb_workspaces.reports.v2.interface as wr_interface
from wandb_workspaces import expr

from eval import dashboard
from eval.compare import WANDB_KEYS, WANDB_STEP, analyze, load_run, md_label_table, write_smoke_runs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def offline(monkeypatch):
    """Any call that would reach the wandb server fails the test."""

    def no_network(*args, **kwargs):
        raise AssertionError("the report was built with a wandb API call")

    monkeypatch.setattr(wr_interface, "_get_api", no_network)


@pytest.fixture
def analysis(tmp_path):
    return analyze([load_run(d) for d in write_smoke_runs(tmp_path)], None)


def test_report_panels_keys_grouping_and_table(offline, analysis):
    report = dashboard.build_report("team", "growth", ["stack", "baseline"], analysis)
    assert (report.entity, report.project, report.title) == ("team", "growth", "Growth schedules: growth")
    intro, grid, table = report.blocks
    assert isinstance(intro, wr.MarkdownBlock) and isinstance(grid, wr.PanelGrid) and isinstance(table, wr.MarkdownBlock)

    (runset,) = grid.runsets
    assert (runset.entity, runset.project, runset.groupby) == ("team", "growth", ["group"])
    assert runset.filters == "Group in ['stack', 'baseline']"
    parsed = str(expr.expr_to_filters(runset.filters))
    assert "group" in parsed and "stack" in parsed and "baseline" in parsed

    # The history keys the runs log (eval/compare.py reads the same keys; its Trainer test checks
    # them against a real run's wandb rows), plus the event metric of growth/reporting.py.
    plotted = {(p.x, p.y[0]) for p in grid.panels}
    assert plotted == {
        (WANDB_KEYS["flops"], WANDB_KEYS["eval_loss"]), (WANDB_KEYS["tokens"], WANDB_KEYS["eval_loss"]),
        (WANDB_KEYS["flops"], WANDB_KEYS["depth"]), (WANDB_STEP, WANDB_KEYS["depth"]),
        (WANDB_KEYS["flops"], WANDB_KEYS["loss"]), (WANDB_KEYS["flops"], "growth/loss_change"),
    }
    assert '"growth/loss_change"' in (REPO / "growth" / "reporting.py").read_text()
    for p in grid.panels:
        assert isinstance(p, wr.LinePlot) and len(p.y) == 1
        # One line per schedule: runs grouped by wandb group, mean over seeds, min-max band.
        assert (p.groupby, p.groupby_aggfunc, p.groupby_rangefunc) == ("Group", "mean", "minmax")
        config = p._to_model().config  # what save() would send for this panel
        assert (config.group_by, config.aggregate, config.x_axis, config.metrics) == ("group", True, p.x, p.y)
    layouts = {(p.layout.x, p.layout.y) for p in grid.panels}
    assert len(layouts) == len(grid.panels)  # no two panels on top of each other

    # The matched-loss table of eval/compare.py, for the same runs.
    assert "\n".join(md_label_table(analysis)) in table.text
    assert "Target loss" in table.text and "FLOPs saved %" in table.text
    assert "| `stack` | 0 | 10 | 2→4 | stack_last | 2 |" in table.text  # the growth event row
    assert "growth_jumps.csv" not in table.text


def test_report_without_table_and_bad_group(offline):
    report = dashboard.build_report("team", "growth")
    assert len(report.blocks) == 2 and report.blocks[1].runsets[0].filters == ""
    assert dashboard.build_report("team", "growth", ["stack"]).blocks[1].runsets[0].filters == "Group = 'stack'"
    with pytest.raises(ValueError, match="--group: a group name with a quote cannot be filtered on, got \"it's\""):
        dashboard.build_report("team", "growth", ["it's"])


def test_cli(offline, capsys):
    report = dashboard.main(["--smoke"])
    out = capsys.readouterr().out
    assert "6 panels grouped by ['group']" in out and "## Matched loss" in out
    assert len(report.blocks) == 3
    with pytest.raises(SystemExit) as e:
        dashboard.main(["--project", "growth"])
    assert e.value.code == 2 and "--entity and --project are required" in capsys.readouterr().err
