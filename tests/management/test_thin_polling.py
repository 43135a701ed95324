"""A polling thin-provisioning manager from today's pieces: an action
repeated ``every`` period, and ``thin-extend`` with ``latency``,
``if-free-below`` and ``cont`` (issue 18: the sizing sweep's manager until
the thin-provisioning controller replaces it)."""

import pytest

import blocksim
from blocksim.errors import ScenarioError

MiB = 1024 * 1024
S = 1_000_000_000


def scenario(extend: dict, every="100ms", duration="2s", rate=100, **extra) -> dict:
    """A guest writing 64 KiB clusters at ``rate`` IOPS onto a thin disk
    of 1 MiB (16 clusters), polled ``every`` period."""
    return {
        "name": "thin-polling", "duration": duration,
        "images": {"disk": {"size": "64MiB", "capacity": "1MiB", "cluster-size": "64KiB",
                            "latency": "100us"}},
        "drives": {"vda": {"image": "disk", "werror": "enospc"}},
        "workloads": {"g": {"drive": "vda", "rw": "write", "bs": "64KiB", "rate-iops": rate}},
        "actions": [{"at": "0s", "every": every, "command": "thin-extend",
                     "arguments": {"image": "disk"} | extend}],
    } | extra


def extends(result):
    return [(c["timestamp"]["seconds"] * S + c["timestamp"]["microseconds"] * 1000, c["return"])
            for c in result.commands if c["execute"] == "thin-extend"
            and c["return"].get("extended") is not False]


def test_a_poll_extends_only_below_the_threshold_and_counts_extends_under_way():
    # 6.4 MiB/s onto 2 MiB; +2 MiB whenever less than 1600 KiB is free, usable
    # 150 ms later.  At 100 ms 704 KiB are allocated: free 1344 KiB, extend.
    # At 200 ms only 704 KiB are free on the device, but 2752 KiB counting
    # the extend under way: no extend.  Then below again at 400 and 800 ms.
    spec = scenario({"by": "2MiB", "if-free-below": "1600KiB", "latency": "150ms"},
                    duration="1s")
    spec["images"]["disk"]["capacity"] = "2MiB"
    r = blocksim.run(blocksim.load_scenario(spec))
    polls = [c for c in r.commands if c["execute"] == "thin-extend"]
    assert len(polls) == 10             # at 0, 100 ms, ..., 900 ms
    assert extends(r) == [(t * 1_000_000, {"capacity": c * MiB, "ready-in": 0.15})
                          for t, c in ((100, 4), (400, 6), (800, 8))]
    # the space always came in time: no pause
    assert r.summary["pauses"]["count"] == 0
    assert r.summary["extends"] == {"count": 3, "bytes": 6 * MiB, "failed": 0,
                                    "by_image": {"disk": {"count": 3, "bytes": 6 * MiB,
                                                          "failed": 0}}}
    assert r.summary["thin_images"]["disk"]["physical"] == 8 * MiB


def test_a_slow_extend_pauses_the_vm_and_cont_follows_the_extend():
    # +1 MiB when less than 256 KiB is free, 1 s later: the guest needs a new
    # MiB every 160 ms, so it outruns the extend and pauses until it is done
    r = blocksim.run(blocksim.load_scenario(scenario(
        {"by": "1MiB", "if-free-below": "256KiB", "latency": "1s", "cont": True})))
    events = [(e["event"], e["timestamp"]) for e in r.events]
    stops = [t for name, t in events if name == "STOP"]
    resumes = [t for name, t in events if name == "RESUME"]
    conts = [c for c in r.commands if c["execute"] == "cont"]
    assert len(stops) >= len(resumes) == len(conts) >= 1
    assert [c["source"] for c in conts] == ["thin-extend"] * len(conts)
    # the first pause: full at 160 ms; the poll at 200 ms asks, 1 s later
    assert stops[0] == {"seconds": 0, "microseconds": 160100}
    assert resumes[0] == {"seconds": 1, "microseconds": 200000}
    # each cont comes with an extend that completed: at a poll's time + 1 s
    asked = [t for t, _ in extends(r)]
    for c in conts:
        t = c["timestamp"]["seconds"] * S + c["timestamp"]["microseconds"] * 1000
        assert t - 1 * S in asked
    assert r.summary["pauses"]["io_error"] == len(stops)
    assert r.summary["drives"]["vda"]["writes_lost"] == 0


def test_without_cont_the_vm_stays_paused():
    r = blocksim.run(blocksim.load_scenario(scenario(
        {"by": "1MiB", "if-free-below": "256KiB", "latency": "1s"})))
    assert r.summary["vm"]["final_state"] == "io-error"
    assert r.summary["pauses"]["count"] == 1


def test_an_immediate_extend_is_unchanged():
    r = blocksim.run(blocksim.load_scenario(scenario({"by": "1MiB"}, every="1s")))
    assert [ret for _, ret in extends(r)] == [{"capacity": 2 * MiB}, {"capacity": 3 * MiB}]


@pytest.mark.parametrize("action, message", [
    ({"on": "STOP", "every": "1s", "command": "cont"}, "actions.0.every: only allowed with 'at'"),
    ({"at": "1s", "every": "0s", "command": "cont"}, "actions.0.every: must be greater than 0"),
    ({"at": "1s", "command": "thin-extend", "arguments": {"image": "disk", "by": "1MiB",
                                                          "latency": "-1s"}},
     "actions.0.arguments.latency: invalid duration"),
])
def test_bad_polls_are_refused(action, message):
    spec = scenario({"by": "1MiB"}, actions=[action])
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(spec)
    assert message in str(info.value)
