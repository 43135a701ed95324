"""What never happened (issue 20): actions that never fired and fault rules
that never matched a request, in summary.json's ``never`` and as warnings of
the outcome table."""

import blocksim
from blocksim.cli.commands import format_outcome
from blocksim.record.summary import never_lines


def scenario(**extra):
    raw = {"name": "never", "duration": "5s",
           "images": {"disk": {"size": "64MiB"}, "tgt": {"size": "64MiB"}},
           "drives": {"vda": {"image": "disk", "werror": "stop"}},
           "workloads": {"w": {"drive": "vda", "rw": "randwrite"}},
           "faults": [{"image": "disk", "operation": "write", "errno": "ENOSPC", "start": "1s", "count": 1},
                      {"image": "tgt", "operation": "write", "errno": "EIO"},
                      {"image": "disk", "type": "delay", "operation": "read", "delay": "1ms"}],
           "actions": [{"on": "BLOCK_JOB_READY", "command": "cont"},
                       {"at": "2s", "command": "query-block"},
                       {"at": "9s", "command": "cont"},
                       {"on": "STOP", "command": "query-block-jobs"}]}
    raw.update(extra)
    return blocksim.load_scenario(raw)


def test_unfired_actions_and_unmatched_faults_are_listed():
    result = blocksim.run(scenario())
    assert result.summary["vm"]["final_state"] == "io-error"       # left paused: why?
    assert result.summary["never"] == {
        "actions": [{"index": 0, "trigger": "on BLOCK_JOB_READY", "command": "cont"},
                    {"index": 2, "trigger": "at 9s", "command": "cont"}],
        "faults": [{"index": 1, "type": "error", "image": "tgt", "operation": ["write"], "errno": "EIO"},
                   {"index": 2, "type": "delay", "image": "disk", "operation": ["read"], "errno": "EIO"}]}
    assert never_lines(result.summary) == [
        "action 0 (on BLOCK_JOB_READY, cont) never fired",
        "action 2 (at 9s, cont) never fired",
        "fault 1 (tgt write EIO) never matched a request",
        "fault 2 (delay disk read delay) never matched a request"]
    table = format_outcome(result)
    assert "  warning: action 0 (on BLOCK_JOB_READY, cont) never fired\n" in table
    assert "  warning: fault 1 (tgt write EIO) never matched a request" in table


def test_a_run_where_everything_happened_has_no_never_block():
    result = blocksim.run(scenario(faults=[], actions=[{"at": "2s", "command": "query-block"}]))
    assert "never" not in result.summary
    assert "warning" not in format_outcome(result)


def test_the_same_with_and_without_shortcuts():
    s = scenario()
    assert (blocksim.Simulation(s, shortcuts=False).run().summary["never"]
            == blocksim.Simulation(s).run().summary["never"])


def test_an_empty_list_is_left_out():
    result = blocksim.run(scenario(faults=[]))
    assert list(result.summary["never"]) == ["actions"]
