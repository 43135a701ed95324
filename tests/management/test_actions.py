"""Event-driven actions: which events an ``on`` action reacts to (``match``,
``nth``, ``repeat``, ``after`` / ``after-match``), in the simulation and in
qemu-check, which share :class:`blocksim.management.actions.Trigger`."""

import heapq
import itertools
import time

import pytest

from blocksim import load_scenario
from blocksim.management.actions import Trigger
from blocksim.qemu.check import _QemuRun
from blocksim.qemu.translate import translate

from jobcases import JOB, MiB, at, commands, err, fault, mirror_case, on, simulate, st, timeline


def offer_all(trigger: Trigger, events) -> list[int]:
    """The positions of the events the trigger reacts to."""
    return [i for i, (name, data) in enumerate(events) if trigger.offer(name, data)]


ERR = ("BLOCK_JOB_ERROR", {"device": "j", "action": "ignore"})
OTHER_ERR = ("BLOCK_JOB_ERROR", {"device": "k", "action": "ignore"})
READY = ("BLOCK_JOB_READY", {"device": "j"})
PAUSED = ("JOB_STATUS_CHANGE", {"id": "j", "status": "paused"})
RUNNING = ("JOB_STATUS_CHANGE", {"id": "j", "status": "running"})


# -- the rule ---------------------------------------------------------------------------------

def test_without_nth_or_after_the_first_matching_event():
    assert offer_all(Trigger("BLOCK_JOB_ERROR", {"device": "j"}), [OTHER_ERR, ERR, ERR]) == [1]
    assert offer_all(Trigger("BLOCK_JOB_ERROR", repeat=True), [ERR, READY, ERR]) == [0, 2]


def test_nth_reacts_to_the_nth_matching_event_only():
    events = [ERR, OTHER_ERR, ERR, READY, ERR, ERR]
    assert offer_all(Trigger("BLOCK_JOB_ERROR", {"device": "j"}, nth=2), events) == [2]
    assert offer_all(Trigger("BLOCK_JOB_ERROR", {"device": "j"}, nth=5), events) == []


def test_nth_with_repeat_reacts_to_every_nth():
    assert offer_all(Trigger("BLOCK_JOB_ERROR", nth=2, repeat=True), [ERR] * 7) == [1, 3, 5]


def test_after_arms_and_the_arming_event_does_not_count():
    # errors before READY are neither counted nor reacted to
    events = [ERR, ERR, READY, ERR, ERR]
    assert offer_all(Trigger("BLOCK_JOB_ERROR", after="BLOCK_JOB_READY"), events) == [3]
    assert offer_all(Trigger("BLOCK_JOB_ERROR", nth=2, after="BLOCK_JOB_READY"), events) == [4]
    # on = after: the arming event is not the one reacted to
    assert offer_all(Trigger("BLOCK_JOB_ERROR", after="BLOCK_JOB_ERROR"), [ERR] * 3) == [1]
    assert offer_all(Trigger("BLOCK_JOB_ERROR", after="BLOCK_JOB_ERROR", repeat=True),
                     [ERR] * 5) == [1, 3]


def test_after_match_filters_the_arming_event():
    events = [RUNNING, ERR, PAUSED, ERR, RUNNING, ERR]
    trigger = Trigger("BLOCK_JOB_ERROR", after="JOB_STATUS_CHANGE", after_match={"status": "paused"})
    assert offer_all(trigger, events) == [3]


def test_each_reaction_disarms_until_the_after_event_comes_again():
    # "since this action last fired": with repeat it reacts once per arming
    events = [ERR, PAUSED, ERR, ERR, PAUSED, PAUSED, ERR, ERR]
    trigger = Trigger("BLOCK_JOB_ERROR", repeat=True, after="JOB_STATUS_CHANGE",
                      after_match={"status": "paused"})
    assert offer_all(trigger, events) == [2, 6]


# -- in the simulation ------------------------------------------------------------------------

def query_times(result) -> list[dict]:
    return [c["timestamp"] for c in result.commands if c["execute"] == "query-block-jobs"]


def error_times(result) -> list[dict]:
    return [e["timestamp"] for e in result.events if e["event"] == "BLOCK_JOB_ERROR"]


def ignored_errors(**action) -> dict:
    # three one-shot target write errors under ignore, in three bursts
    faults = [fault("dst", "write", offset=k * MiB, length=4096, count="once") for k in (1, 2, 3)]
    return mirror_case(on_target_error="ignore", speed=MiB, buf_size=MiB, faults=faults,
                       actions=[{"on": "BLOCK_JOB_ERROR", "command": "query-block-jobs", **action}])


def test_an_action_with_nth_runs_once_at_the_nth_event():
    r = simulate(ignored_errors(nth=2))[1]
    assert timeline(r, "BLOCK_JOB_ERROR") == [err("write", "ignore")] * 3
    errors = error_times(r)
    assert query_times(r) == [errors[1]]
    assert len({(t["seconds"], t["microseconds"]) for t in errors}) == 3    # three instants


def test_an_action_with_after_waits_for_its_event():
    # after READY: the three errors come before it, so nothing reacts ...
    r = simulate(ignored_errors(after="BLOCK_JOB_READY"))[1]
    assert commands(r, "query-block-jobs") == []
    assert "BLOCK_JOB_READY" in r.event_names()
    # ... while after the first error (on = after) it reacts to the second.
    r = simulate(ignored_errors(after="BLOCK_JOB_ERROR", repeat=True))[1]
    assert query_times(r) == [error_times(r)[1]]


def test_resume_after_the_first_stop_error_force_cancel_after_the_second():
    # The script the issue asks for, written with nth and with after.
    base = dict(on_target_error="stop", speed=4 * MiB,
                faults=[fault("dst", "write", offset=2 * MiB, length=512)])
    resume = on("BLOCK_JOB_ERROR", "block-job-resume", delay="0.2s", device=JOB)
    cancel_nth = dict(on("BLOCK_JOB_ERROR", "block-job-cancel", delay="0.2s", device=JOB,
                         force=True), nth=2)
    cancel_after = dict(on("BLOCK_JOB_ERROR", "block-job-cancel", delay="0.2s", device=JOB,
                           force=True), after="JOB_STATUS_CHANGE",
                        **{"after-match": {"status": "paused"}})
    expected = [*st("created", "running"), err("write", "stop"), *st("paused", "running"),
                err("write", "stop"), *st("paused", "running", "aborting"),
                ("BLOCK_JOB_CANCELLED", JOB), *st("concluded", "null")]
    for cancel in (cancel_nth, cancel_after):
        r = simulate(mirror_case(**base, actions=[resume, cancel]))[1]
        assert [t[:2] for t in timeline(r)] == [t[:2] for t in expected]
        assert [c["execute"] for c in r.commands] == [
            "blockdev-mirror", "block-job-resume", "block-job-cancel"]
        assert all("error" not in c for c in r.commands)


# -- in qemu-check ------------------------------------------------------------------------------

def test_qemu_check_reacts_to_the_same_events(tmp_path):
    scenario = load_scenario(mirror_case(on_target_error="stop", actions=[
        on("BLOCK_JOB_ERROR", "block-job-resume", device=JOB),
        dict(on("BLOCK_JOB_ERROR", "query-block-jobs"), nth=2),
        dict(on("BLOCK_JOB_ERROR", "block-job-cancel", device=JOB, force=True),
             after="JOB_STATUS_CHANGE", **{"after-match": {"status": "paused"}}),
        at("1s", "query-block-jobs")]))
    plan = translate(scenario)
    assert [(a.nth, a.after, a.after_match) for a in plan.actions] == [
        (None, None, {}), (2, None, {}), (None, "JOB_STATUS_CHANGE", {"status": "paused"}),
        (None, None, {})]
    assert plan.reduced.to_dict()["actions"] == scenario.to_dict()["actions"]
    run = _QemuRun(plan, None, tmp_path, 1.0)
    run.t0 = time.monotonic()
    triggers = run._triggers()
    assert sorted(triggers) == [0, 1, 2]
    queue, seq = [], itertools.count()
    stream = [("JOB_STATUS_CHANGE", {"id": JOB, "status": "running"}),
              ("BLOCK_JOB_ERROR", {"device": JOB, "operation": "write", "action": "stop"}),
              ("JOB_STATUS_CHANGE", {"id": JOB, "status": "paused"}),
              ("JOB_STATUS_CHANGE", {"id": JOB, "status": "running"}),
              ("BLOCK_JOB_ERROR", {"device": JOB, "operation": "write", "action": "stop"}),
              ("BLOCK_JOB_ERROR", {"device": JOB, "operation": "write", "action": "stop"})]
    reacted = []
    for name, data in stream:
        run._on_event({"event": name, "data": data}, queue, seq, triggers)
        reacted.append(sorted(item.index for _t, _n, _k, item in queue))
    assert reacted == [[], [0], [0], [0], [0, 1, 2], [0, 1, 2]]
    assert [heapq.heappop(queue)[3].command for _ in range(3)] == [
        "block-job-resume", "query-block-jobs", "block-job-cancel"]
