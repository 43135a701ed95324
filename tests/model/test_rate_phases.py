"""Rate phases: bursty guests (``burst``) and rate traces (``trace``).

Request times are recorded one by one (no shortcut), so they are the
model's own due times: within a phase of rate r request i is due at
S + int(i * 1e9 / r), a phase's first request when it starts (or, right
after another phase with requests, where that one's pacing puts it), none
in a phase of rate 0.
"""

import pytest

import blocksim
from blocksim.errors import ScenarioError
from tests.model.test_guest import recorded, workload

MS = 1_000_000


def test_burst_on_off_issues_only_while_on():
    sim, r, log = recorded(workload(rw="write", duration="100ms", **{
        "rate-iops": 1000, "burst": {"on": "10ms", "off": "15ms"}}))
    times = [t for t, *_x in log]
    # 10 requests per 25 ms cycle, each cycle starting on time
    assert times[:12] == [i * MS for i in range(10)] + [25 * MS, 26 * MS]
    assert len(times) == 40
    assert all((t % (25 * MS)) < 10 * MS for t in times)
    assert r.summary["drives"]["d0"]["writes"] == 40


def test_trace_rates_change_where_the_rows_say():
    sim, r, log = recorded(workload(rw="write", duration="30ms", trace=[
        [0, 1000], ["5ms", 2000], ["10ms", 0], ["20ms", 500]]))
    times = [t for t, *_x in log]
    assert times == ([i * MS for i in range(5)] + [5 * MS + i * MS // 2 for i in range(10)]
                     + [20 * MS, 22 * MS, 24 * MS, 26 * MS, 28 * MS])


def test_a_trace_that_does_not_change_is_the_constant_rate():
    steady = blocksim.run(blocksim.load_scenario(workload(rw="randwrite", duration="50ms",
                                                          **{"rate-iops": 3000})), seed=2)
    traced = blocksim.run(blocksim.load_scenario(workload(
        rw="randwrite", duration="50ms", trace=[[0, 3000], ["7ms", 3000], ["31ms", 3000.0]])), seed=2)
    assert traced.events_jsonl() == steady.events_jsonl()
    assert traced.summary["drives"] == steady.summary["drives"]
    assert traced.series == steady.series


def test_random_bursts_are_seeded_and_leave_the_offsets_alone():
    spec = workload(rw="randwrite", duration="200ms", **{
        "rate-iops": 2000, "burst": {"on": "10ms", "off": "10ms", "random": True}})
    a, b = recorded(spec, seed=1)[2], recorded(spec, seed=1)[2]
    c = recorded(spec, seed=2)[2]
    assert a == b
    assert [t for t, *_x in a] != [t for t, *_x in c]
    fixed = recorded(workload(rw="randwrite", duration="200ms", **{
        "rate-iops": 2000, "burst": {"on": "10ms", "off": "10ms"}}), seed=1)[2]
    # the offsets come from the workload's own stream, the phases from another
    n = min(len(a), len(fixed))
    assert [o for _t, _op, o, _n in a[:n]] == [o for _t, _op, o, _n in fixed[:n]]


def test_a_paused_burst_catches_up_when_the_vm_continues():
    # stopped from 2.5 ms to 12 ms: the request due at 3 ms waits for the VM
    # (logged as it enters the drive), the 6 due from 4 to 9 ms are issued
    # back to back once it completes, then the next burst starts on time
    spec = workload(rw="write", duration="40ms", **{
        "rate-iops": 1000, "burst": {"on": "10ms", "off": "10ms"}})
    spec["actions"] = [{"at": "2500us", "command": "stop"}, {"at": "12ms", "command": "cont"}]
    times = [t for t, *_x in recorded(spec)[2]]
    assert times[:3] == [0, MS, 2 * MS]
    assert times[3] == 3 * MS
    assert 12 * MS < times[4] < times[9] < 13 * MS
    assert times[10] == 20 * MS


def test_trace_file_relative_to_the_scenario_file(tmp_path):
    (tmp_path / "rates.csv").write_text("# a quiet start\ntime,bytes-per-second\n0,0\n"
                                        "10ms,4MiB\n")
    (tmp_path / "s.toml").write_text(
        'duration = "20ms"\n[images.disk]\nsize = "1MiB"\n[drives.d0]\nimage = "disk"\n'
        '[workloads.w]\ndrive = "d0"\nrw = "write"\nbs = "4KiB"\ntrace = "rates.csv"\n')
    scenario = blocksim.load_scenario(tmp_path / "s.toml")
    assert scenario.workloads["w"].trace == [(0, 0.0), (10 * MS, 1024.0)]
    r = blocksim.run(scenario)
    assert r.summary["drives"]["d0"]["writes"] == 11      # 1024 IOPS for 10 ms
    # the resolved scenario holds the rows, not the file
    assert blocksim.load_scenario(scenario.to_dict()) == scenario


@pytest.mark.parametrize("body, message", [
    (None, "rates.csv: no such file"),
    ("time,rate\n0,1\n", "rates.csv line 1: header must be 'time,rate-iops' or "
                         "'time,bytes-per-second', got 'time,rate'"),
    ("time,rate-iops\n0,10\n1,-4\n", "rates.csv line 3: rate-iops must be a finite number >= 0, got -4"),
    ("time,rate-iops\n0,ten\n", "rates.csv line 2: rate-iops: not a number: 'ten'"),
    ("time,rate-iops\n0,10,3\n", "rates.csv line 2: expected 2 columns (time, rate-iops), got 3"),
    ("time,rate-iops\n2,10\n1,3\n", "rates.csv line 3: times must increase, got 1 after 2s"),
    ("time,rate-iops\n-1,10\n", "rates.csv line 2: time: invalid duration -1: must not be negative"),
    ("time,rate-iops\n", "rates.csv: no rows after the header"),
])
def test_bad_trace_files_get_a_located_one_line_error(tmp_path, body, message):
    if body is not None:
        (tmp_path / "rates.csv").write_text(body)
    path = tmp_path / "s.toml"
    path.write_text('[images.disk]\nsize = "1MiB"\n[drives.d0]\nimage = "disk"\n'
                    '[workloads.w]\ndrive = "d0"\ntrace = "rates.csv"\n')
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(path)
    text = str(info.value)
    expected = f"workloads.w.trace: trace file {tmp_path / 'rates.csv'}{message[len('rates.csv'):]}"
    assert expected in text
    assert len([line for line in text.splitlines() if "trace" in line]) == 1



def test_a_huge_trace_file_is_refused_before_it_is_read(tmp_path):
    # (a sparse file: its size is all the check looks at)
    with open(tmp_path / "rates.csv", "wb") as f:
        f.truncate(64 * 1024 * 1024)
    path = tmp_path / "s.toml"
    path.write_text('[images.disk]\nsize = "1MiB"\n[drives.d0]\nimage = "disk"\n'
                    '[workloads.w]\ndrive = "d0"\ntrace = "rates.csv"\n')
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(path)
    assert (f"workloads.w.trace: trace file {tmp_path / 'rates.csv'}: 67108864 bytes; "
            "at most 16777216") in str(info.value)

@pytest.mark.parametrize("extra, message", [
    ({"burst": {"on": "1s", "off": "1s"}}, "workloads.w: burst needs rate-iops"),
    ({"rate-iops": 5, "trace": [[0, 5]]}, "workloads.w: trace gives the rates itself"),
    ({"rate-iops": 5, "burst": {"on": "1s", "off": "1s"}, "trace": [[0, 5]]},
     "workloads.w: burst and trace exclude each other"),
    ({"rate-iops": 5, "burst": {"on": "0s", "off": "1s"}}, "workloads.w.burst.on: must be greater than 0"),
    ({"trace": [[0, 0], [1, 0]]}, "workloads.w.trace: every rate of the trace is 0"),
    ({"trace": [[0, 3], [1, -1]]}, "workloads.w.trace: row 1: rate must be a finite number >= 0"),
    ({"trace": []}, "workloads.w.trace: a trace needs at least one"),
])
def test_bad_phases_are_refused(extra, message):
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(workload(**extra))
    assert message in str(info.value)
