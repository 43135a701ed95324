"""blocksim.analysis: pandas views with proper dtypes and plot helpers, on small runs."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from blocksim import analysis, load_scenario, run  # noqa: E402

MiB = 1024 * 1024

# A 16 MiB disk mirrored at 16 MiB/s onto a thin target with 8 MiB of space:
# ENOSPC after about 0.5 s; the management layer queries, extends and resumes
# 1 s after the error, completes on READY and queries once more at the end.
THIN = {
    "name": "thin",
    "duration": "3s",
    "images": {"src": {"size": "16MiB", "data": "full"},
               "tgt": {"size": "16MiB", "capacity": "8MiB"}},
    "drives": {"vda": {"image": "src"}},
    # (buf-size 2 MiB: iterations of two 1 MiB copies, a 125 ms sleep after each)
    "jobs": {"job0": {"type": "mirror", "device": "vda", "target": "tgt", "speed": "16MiB",
                      "buf-size": "2MiB", "on-target-error": "stop"}},
    "actions": [
        {"at": "0.25s", "command": "query-block-jobs"},
        {"on": "BLOCK_JOB_ERROR", "delay": "0.5s", "command": "query-block-jobs"},
        {"on": "BLOCK_JOB_ERROR", "delay": "1s", "command": "thin-extend",
         "arguments": {"image": "tgt", "capacity": "16MiB"}},
        {"on": "BLOCK_JOB_ERROR", "delay": "1s", "command": "block-job-resume",
         "arguments": {"device": "job0"}},
        {"on": "BLOCK_JOB_READY", "command": "block-job-complete",
         "arguments": {"device": "job0"}},
        {"at": "2.9s", "command": "query-block-jobs"},
        {"at": "2.95s", "command": "block-job-pause", "arguments": {"device": "job0"}},
    ],
}


def thin(policy="stop", **overrides):
    return load_scenario(THIN, overrides={"jobs.job0.on-target-error": policy, **overrides})


@pytest.fixture(scope="module")
def stop_run():
    return run(thin("stop"))


@pytest.fixture(scope="module")
def runs():
    """report and stop, two seeds each, with the policy as a parameter."""
    results, params = [], []
    for policy in ("report", "stop"):
        for seed in (1, 2):
            results.append(run(thin(policy), seed=seed))
            params.append({"policy": policy, "speed_mib": 16})
    return results, params


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# -- events_frame ----------------------------------------------------------------------

def test_events_frame_has_float_time_index_and_categorical_names(stop_run):
    ev = analysis.events_frame(stop_run)
    assert ev.index.name == "time"
    assert ev.index.dtype == np.float64
    assert isinstance(ev["event"].dtype, pd.CategoricalDtype)
    for col in ("id", "status", "device", "operation", "action", "type"):
        assert isinstance(ev[col].dtype, pd.CategoricalDtype), col
    for col in ("len", "offset", "speed"):
        assert ev[col].dtype == np.float64, col
    assert ev["seq"].tolist() == list(range(len(stop_run.events)))
    assert ev["event"].tolist() == stop_run.event_names()


def test_events_frame_values(stop_run):
    ev = analysis.events_frame(stop_run)
    error = ev[ev["event"] == "BLOCK_JOB_ERROR"]
    # 8 MiB at 16 MiB/s: the target fills after half a second, and both
    # copies of that slice's burst (2 MiB) fail
    assert len(error) == 2
    for i in range(2):
        assert error.iloc[i][["device", "operation", "action"]].tolist() == \
            ["job0", "write", "stop"]
    assert error.index[0] == pytest.approx(0.5, abs=0.01)
    statuses = ev.loc[ev["event"] == "JOB_STATUS_CHANGE", "status"].tolist()
    assert statuses == ["created", "running", "paused", "running", "ready", "waiting",
                        "pending", "concluded", "null"]
    ready = ev[ev["event"] == "BLOCK_JOB_READY"].iloc[0]
    assert ready["len"] == ready["offset"] == 16 * MiB
    assert ready["speed"] == 16 * MiB
    # the resume 1 s after the error
    running_again = ev[(ev["event"] == "JOB_STATUS_CHANGE") & (ev["status"] == "running")].index[1]
    assert running_again - error.index[0] == pytest.approx(1.0)


def test_events_frame_of_an_empty_log():
    quiet = run(load_scenario({"duration": "1s", "images": {"a": {"size": "1MiB"}}}))
    ev = analysis.events_frame(quiet)
    assert len(ev) == 0
    assert ev.index.name == "time"
    assert isinstance(ev["event"].dtype, pd.CategoricalDtype)


# -- series_frame ------------------------------------------------------------------------

def test_series_frame_dtypes_and_values(stop_run):
    s = analysis.series_frame(stop_run)
    assert s.index.name == "time"
    assert s.index.dtype == np.float64
    assert s.index[0] == 0.0 and s.index[-1] == pytest.approx(3.0)
    for col in ("vm.state", "job.job0.status", "job.job0.io-status", "drive.vda.io-status"):
        assert isinstance(s[col].dtype, pd.CategoricalDtype), col
    for col in ("job.job0.offset", "job.job0.len", "image.tgt.allocated", "image.tgt.capacity",
                "image.src.capacity", "drive.vda.iops", "drive.vda.latency"):
        assert pd.api.types.is_numeric_dtype(s[col]), col
    # the thin target's capacity as seen by the sampler: 8 MiB, then 16 MiB after the extend
    assert s.loc[1.0, "image.tgt.capacity"] == 8 * MiB
    assert s.loc[2.0, "image.tgt.capacity"] == 16 * MiB
    assert s["image.src.capacity"].isna().all()           # not thin
    assert s.loc[1.0, "job.job0.status"] == "paused"
    assert s.loc[1.0, "job.job0.io-status"] == "nospace"


# -- commands, query-block-jobs, time in state --------------------------------------------

def test_commands_frame(stop_run):
    c = analysis.commands_frame(stop_run)
    assert c.index.name == "time" and c.index.dtype == np.float64
    assert isinstance(c["execute"].dtype, pd.CategoricalDtype)
    assert c["ok"].dtype == bool
    assert c["execute"].tolist() == ["blockdev-mirror", "query-block-jobs", "query-block-jobs",
                                     "thin-extend", "block-job-resume", "block-job-complete",
                                     "query-block-jobs", "block-job-pause"]
    extend = c[c["execute"] == "thin-extend"].iloc[0]
    assert extend["return"] == {"capacity": 16 * MiB}
    assert extend["source"] == "actions.2"
    # the job is gone by 2.95 s: the pause is refused, with QMP's text
    pause = c[c["execute"] == "block-job-pause"].iloc[0]
    assert not pause["ok"]
    assert "job0" in pause["error"]


def test_query_block_jobs_snapshots(stop_run):
    q = analysis.query_block_jobs_snapshots(stop_run)
    assert q.index.name == "time" and q.index.dtype == np.float64
    # three queries, the last one (after completion) returned no job
    assert q["query"].tolist() == [0, 1]
    assert q.index[0] == pytest.approx(0.25)
    first, paused = q.iloc[0], q.iloc[1]
    assert first["status"] == "running" and first["io-status"] == "ok"
    assert first["offset"] == 4 * MiB and first["len"] == 16 * MiB
    assert first["progress"] == pytest.approx(0.25)
    assert paused["status"] == "paused"
    assert bool(paused["paused"]) is True
    assert paused["io-status"] == "nospace"
    assert paused["offset"] == 8 * MiB
    assert paused["progress"] == pytest.approx(0.5)
    assert isinstance(q["status"].dtype, pd.CategoricalDtype)
    assert isinstance(q["io-status"].dtype, pd.CategoricalDtype)
    assert q["paused"].dtype == bool
    assert q["offset"].dtype == np.int64 and q["progress"].dtype == np.float64


def test_query_block_jobs_snapshots_without_queries():
    r = run(load_scenario({**THIN, "actions": []}))
    q = analysis.query_block_jobs_snapshots(r)
    assert len(q) == 0
    assert q.index.name == "time"


def test_time_in_state(stop_run):
    spent = analysis.time_in_state(stop_run, "job.job0.status")
    assert spent.sum() == pytest.approx(3.0)
    assert spent["paused"] == pytest.approx(1.0, abs=0.1)       # the 1 s until the resume
    assert 0.8 < spent["null"] < 1.1                             # gone after about 2 s
    assert analysis.time_in_state(stop_run, "vm.state").to_dict() == {"running": pytest.approx(3.0)}


# -- runs_frame ----------------------------------------------------------------------------

def test_runs_frame_one_row_per_run_with_values(runs):
    results, params = runs
    f = analysis.runs_frame(results, params)
    assert len(f) == 4
    assert f["seed"].tolist() == [1, 2, 1, 2]
    assert f["policy"].tolist() == ["report", "report", "stop", "stop"]
    report, stop = f[f["policy"] == "report"], f[f["policy"] == "stop"]
    assert (report["outcome"] == "completed-with-error").all()
    assert (report["error"] == "No space left on device").all()
    assert report["ready_at"].isna().all()
    # the error at 0.5 s is seen when the job wakes from its rate-limit sleep
    assert report["finished_at"].between(0.6, 0.65).all()
    assert (report["bytes_copied"] == 8 * MiB).all()
    assert (stop["outcome"] == "completed").all()
    assert stop["error"].isna().all()
    # (paused once the copies in flight are done, resumed 1 s after the error)
    assert stop["time_paused"].tolist() == pytest.approx([1.0, 1.0], abs=0.01)
    assert stop["ready_at"].between(2.0, 2.1).all()
    assert (stop["bytes_copied"] == 16 * MiB).all()
    assert (stop["integrity"] == "identical").all()
    assert (f["job_errors"] == 2).all()       # both copies of the burst that fills the target
    assert (f["guest_errors"] == 0).all() and (f["writes_lost"] == 0).all()
    assert (f["vm_time_paused"] == 0.0).all()
    assert (f["violations"] == 0).all()
    assert f["guest_latency"].isna().all()                      # no guest I/O at all
    # the last action (a pause of a job already gone) is refused in every run, and so is
    # the resume of a job that had already failed (report)
    assert report["refused_commands"].tolist() == [2, 2]
    assert stop["refused_commands"].tolist() == [1, 1]


def test_runs_frame_dtypes(runs):
    f = analysis.runs_frame(*runs)
    for col in ("scenario", "profile", "policy", "outcome", "error", "integrity"):
        assert isinstance(f[col].dtype, pd.CategoricalDtype), col
    assert list(f["outcome"].cat.categories) == list(analysis.OUTCOMES)
    for col in ("ready_at", "finished_at", "time_paused", "vm_time_paused", "guest_latency"):
        assert f[col].dtype == np.float64, col
    for col in ("seed", "bytes_copied", "job_errors", "guest_errors", "writes_lost",
                "speed_mib", "events", "violations"):
        assert f[col].dtype == np.int64, col


def test_runs_frame_accepts_pairs_and_a_params_function(runs):
    results, params = runs
    pairs = analysis.runs_frame(list(zip(params, results)))
    assert pairs["policy"].tolist() == ["report", "report", "stop", "stop"]
    by_fn = analysis.runs_frame(results, lambda r: {
        "policy": r.scenario["jobs"]["job0"]["on-target-error"]})
    assert by_fn["policy"].tolist() == ["report", "report", "stop", "stop"]
    with pytest.raises(ValueError):
        analysis.runs_frame(results, params[:2])


def test_runs_frame_prefixes_columns_with_several_jobs():
    two = {
        "duration": "2s",
        "images": {"a": {"size": "4MiB", "data": "full"}, "b": {"size": "4MiB"},
                   "c": {"size": "4MiB", "data": "full"}, "d": {"size": "4MiB"}},
        "drives": {"vda": {"image": "a"}, "vdb": {"image": "c"}},
        "jobs": {"m1": {"type": "mirror", "device": "vda", "target": "b"},
                 "m2": {"type": "mirror", "device": "vdb", "target": "d", "start": "manual"}},
    }
    r = run(load_scenario(two))
    f = analysis.runs_frame([r])
    assert f.loc[0, "m1.outcome"] == "ready"
    assert f.loc[0, "m2.outcome"] == "not-started"
    assert f.loc[0, "m1.ready_at"] < 1.0
    assert math.isnan(f.loc[0, "m2.ready_at"])
    assert "outcome" not in f
    only = analysis.runs_frame([r], job="m1")
    assert only.loc[0, "outcome"] == "ready"
    assert "m2.outcome" not in only


# -- outcome shares and plots ----------------------------------------------------------------

def test_outcome_shares(runs):
    f = analysis.runs_frame(*runs)
    shares = analysis.outcome_shares(f, by="policy")
    assert list(shares.columns) == ["completed", "completed-with-error"]
    assert shares.loc["report"].tolist() == [0.0, 1.0]
    assert shares.loc["stop"].tolist() == [1.0, 0.0]
    overall = analysis.outcome_shares(f)
    assert overall.iloc[0].tolist() == [0.5, 0.5]
    assert np.allclose(shares.sum(axis=1), 1.0)


def test_outcome_shares_needs_a_column_when_ambiguous():
    f = pd.DataFrame({"a.outcome": ["completed"], "b.outcome": ["cancelled"]})
    with pytest.raises(ValueError):
        analysis.outcome_shares(f)
    assert analysis.outcome_shares(f, column="b.outcome").iloc[0].tolist() == [1.0]


def test_plot_outcomes_returns_figure_and_axes(runs):
    f = analysis.runs_frame(*runs)
    fig, ax = analysis.plot_outcomes(f, by="policy")
    assert isinstance(fig, Figure) and ax.figure is fig
    assert [t.get_text() for t in ax.get_yticklabels()] == ["report", "stop"]
    widths = {(p.get_y(), p.get_facecolor()): p.get_width() for p in ax.patches}
    assert sorted(widths.values()) == [0.0, 0.0, 1.0, 1.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["completed",
                                                                    "completed-with-error"]
    # drawing onto a given axes
    fig2, ax2 = plt.subplots()
    assert analysis.plot_outcomes(f, by="policy", ax=ax2) == (fig2, ax2)


def test_plot_heatmap_values_and_missing_cells():
    frame = pd.DataFrame({
        "speed": [8, 8, 64, 64, 8, 64],
        "iops": [0, 0, 0, 0, 400, 400],
        "ready_at": [8.0, 10.0, 1.0, 1.0, np.nan, 2.0],
    })
    fig, ax = analysis.plot_heatmap(frame, x="speed", y="iops", value="ready_at")
    assert isinstance(fig, Figure)
    data = ax.images[0].get_array()
    # rows: iops 0, 400 (upwards); columns: speed 8, 64; mean over runs
    assert data[0, 0] == 9.0 and data[0, 1] == 1.0 and data[1, 1] == 2.0
    assert bool(np.ma.getmaskarray(data)[1, 0])          # never: every run NaN
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("never") == 1
    assert "9.0" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "64"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "400"]
    assert ax.get_xlabel() == "speed" and ax.get_ylabel() == "iops"
    fig2, ax2 = plt.subplots()
    assert analysis.plot_heatmap(frame, "speed", "iops", "ready_at", ax=ax2, agg="max")[1] is ax2
    assert ax2.images[0].get_array()[0, 0] == 10.0
