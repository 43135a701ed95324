"""A sweep's comparison.png: missing values shown as missing, figures in units."""

import math

from blocksim.analysis.sweep import SweepResult


def result(rows, vary):
    definition = {"scenario_name": "s", "seeds": 2, "base_seed": 0, "vary": vary,
                  "runs": len(rows)}
    return SweepResult(definition, rows)


def panel(fig, column):
    return next(ax for ax in fig.axes if ax.get_title().startswith(column + " ("))


def test_a_figure_no_run_has_is_missing_not_zero():
    # speed 4M: the mirror is never ready, so no run has ready_at
    rows = [{"speed": "4M", "seed": s, "jobs.m.outcome": "never-ready", "jobs.m.ready_at": None,
             "jobs.m.bytes_copied": 3 << 30} for s in (0, 1)]
    rows += [{"speed": "64M", "seed": s, "jobs.m.outcome": "completed", "jobs.m.ready_at": 2.0 + s,
              "jobs.m.bytes_copied": 5 << 30} for s in (0, 1)]
    fig = result(rows, {"speed": ["4M", "64M"]}).plot()
    ready = panel(fig, "jobs.m.ready_at")
    assert len(ready.patches) == 1                       # one bar, for 64M only
    assert ready.patches[0].get_x() + ready.patches[0].get_width() / 2 == 1
    assert [t.get_text() for t in ready.texts] == ["none"]
    assert ready.texts[0].xy[0] == 0
    assert "(s;" in ready.get_title() and ready.get_ylabel() == "s"
    copied = panel(fig, "jobs.m.bytes_copied")
    assert copied.get_ylabel() == "GiB"
    assert [round(p.get_height(), 6) for p in copied.patches] == [3.0, 5.0]
    outcome = next(ax for ax in fig.axes if ax.get_title() == "m: outcome share")
    assert outcome.get_ylabel() == "share of runs"


def test_a_figure_some_runs_lack_says_how_many_have_it():
    rows = [{"p": "0.5", "seed": 0, "jobs.m.ready_at": 4.0},
            {"p": "0.5", "seed": 1, "jobs.m.ready_at": None}]
    ax = panel(result(rows, {"p": ["0.5"]}).plot(), "jobs.m.ready_at")
    assert [t.get_text() for t in ax.texts] == ["1 of 2 runs"]
    assert math.isclose(ax.patches[0].get_height(), 4.0)
