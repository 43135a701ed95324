"""The same sweep on the local process pool and on a Dask distributed cluster
(a real LocalCluster on loopback): the tables are identical row for row."""

import pytest

from blocksim.analysis.sweep import AGGREGATE_CSV, RUNS_CSV, SweepError, sweep
from analysis.test_sweep import VARY, write_tiny

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster


def test_pool_and_dask_tables_identical(tmp_path, cluster):
    tiny = write_tiny(tmp_path)
    pool = sweep(tiny, VARY, seeds=3, workers=2, out=tmp_path / "pool")
    progress = []
    dask = sweep(tiny, VARY, seeds=3, scheduler=cluster.scheduler_address, out=tmp_path / "dask",
                 progress=lambda done, total: progress.append((done, total)))
    assert len(dask.rows) == 12 and dask.ran == 12
    assert [r["seed"] for r in dask.rows] == [3, 4, 5] * 4
    for a, b in zip(pool.rows, dask.rows):
        assert a == b
    assert pool.events == dask.events
    assert (tmp_path / "pool" / RUNS_CSV).read_bytes() == (tmp_path / "dask" / RUNS_CSV).read_bytes()
    assert (tmp_path / "pool" / AGGREGATE_CSV).read_bytes() == \
        (tmp_path / "dask" / AGGREGATE_CSV).read_bytes()
    assert progress[0] == (0, 12) and progress[-1] == (12, 12)


def test_dask_resume_and_failed_rows(tmp_path, cluster):
    tiny = write_tiny(tmp_path)
    folder = tmp_path / "s"
    vary = {"jobs.job0.on-target-error": ["report", "bogus"]}

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 2:
            raise Stop()

    with pytest.raises(Stop):
        sweep(tiny, vary, seeds=2, scheduler=cluster.scheduler_address, out=folder, progress=stop)
    resumed = sweep(tiny, vary, seeds=2, scheduler=cluster.scheduler_address, out=folder)
    assert resumed.resumed == 2 and resumed.ran == 2
    assert [r["error"] is None for r in resumed.rows] == [True, True, False, False]
    assert resumed.rows == sweep(tiny, vary, seeds=2, workers=1).rows


def test_unreachable_scheduler(tmp_path, monkeypatch):
    monkeypatch.setattr("blocksim.analysis.sweep.DASK_CONNECT_TIMEOUT", "1s")
    tiny = write_tiny(tmp_path)
    with pytest.raises(SweepError, match="cannot connect"):
        sweep(tiny, VARY, seeds=1, scheduler="tcp://127.0.0.1:9")
