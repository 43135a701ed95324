"""Validation in one pass: every problem of a file at once, in file order,
one located line each (issue 20), and a ``match`` checked against the data
the event carries (qapi/block-core.json, job.json, run-state.json)."""

import pytest

from blocksim import load_scenario
from blocksim.errors import ScenarioError
from blocksim.scenario.events import EVENT_FIELDS
from blocksim.scenario.fields import EVENTS

BAD = '''\
name = "bad"
duration = "2x"

[images.base]
size = "1GiB"

[images.target]
size = "1GiB"

[drives.vda]
image = "base"
werror = "halt"

[workloads.w]
drive = "vda"
iodepth = "4"

[jobs.m]
type = "mirror"
device = "base"
target = "target"
on-target-eror = "stop"

[[faults]]
image = "nosuch"
operation = "write"

[[actions]]
on = "BLOCK_JOB_REDY"
command = "block-job-complete"
arguments = { device = "m" }

[[actions]]
at = "1s"
command = "block-job-set-speed"
arguments = { device = "m", sped = 100 }

[[actions]]
on = "STOP"
match = { reason = "io-error" }
command = "cont"

[[actions]]
on = "BLOCK_JOB_ERROR"
match = { device = "m", oper = "write", action = "pause" }
command = "block-job-cancel"
arguments = { device = "m" }
'''


def test_every_problem_of_a_file_in_one_run_in_file_order(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    lines = info.value.lines()
    assert [line.split(": ")[1] for line in lines] == [
        "duration",                          # a type
        "drives.vda.werror",                 # a value
        "workloads.w.iodepth",               # a type
        "jobs.m.device",                     # a reference: an image, not a drive
        "jobs.m.on-target-eror",             # ... in a job with a misspelt key
        "faults.0.image",                    # a reference
        "actions.0.on",                      # an unknown event
        "actions.1.arguments.sped",          # a wrong argument name
        "actions.1.arguments.speed",         # ... and the missing one
        "actions.2.match.reason",            # STOP has no data
        "actions.3.match.oper",              # no such field
        "actions.3.match.action",            # a value the field never takes
    ]
    assert all(line.startswith(f"{path}: ") and "\n" not in line for line in lines)
    text = "\n".join(lines)
    assert "'base' is an image, not a drive" in text
    assert "(did you mean 'BLOCK_JOB_READY'?)" in text
    assert "STOP has no field 'reason', so this action can never fire; STOP carries no data" in text
    assert ("BLOCK_JOB_ERROR has no field 'oper' (did you mean 'operation'?), so this action can "
            "never fire; BLOCK_JOB_ERROR carries: device, operation, action") in text
    assert "BLOCK_JOB_ERROR's 'action' is never 'pause'" in text and "'ignore', 'report', 'stop'" in text


def base(**action):
    return {"images": {"disk": {"size": "1GiB"}, "tgt": {"size": "1GiB"}},
            "drives": {"vda": {"image": "disk"}},
            "jobs": {"m": {"type": "mirror", "device": "vda", "target": "tgt"}},
            "actions": [{"command": "cont", **action}]}


def problems(raw):
    with pytest.raises(ScenarioError) as info:
        load_scenario(raw)
    return info.value.problems


@pytest.mark.parametrize("action, key, text", [
    ({"on": "STOP", "match": {"reason": "io-error"}}, "actions.0.match.reason", "STOP carries no data"),
    ({"on": "RESUME", "match": {"device": "vda"}}, "actions.0.match.device", "RESUME carries no data"),
    ({"on": "BLOCK_IO_ERROR", "match": {"nospace": "yes"}}, "actions.0.match.nospace",
     "is never 'yes', so this action can never fire; it is true or false"),
    ({"on": "JOB_STATUS_CHANGE", "match": {"status": "stopped"}}, "actions.0.match.status",
     "'concluded'"),
    ({"on": "BLOCK_JOB_READY", "match": {"offset": "1MiB"}}, "actions.0.match.offset", "an integer"),
    ({"on": "BLOCK_IO_ERROR", "after": "STOP", "after-match": {"reason": "x"}},
     "actions.0.after-match.reason", "STOP carries no data"),
    ({"on": "VOLUME_EXTENDED", "match": {"device": "disk"}}, "actions.0.match.device",
     "VOLUME_EXTENDED carries: image, size"),
])
def test_a_match_that_can_never_hold_is_an_error(action, key, text):
    found = problems(base(**action))
    assert len(found) == 1 and found[0][0] == key and text in found[0][1], found


@pytest.mark.parametrize("action", [
    {"on": "BLOCK_IO_ERROR", "match": {"device": "vda", "node-name": "disk", "operation": "write",
                                       "action": "stop", "nospace": True, "reason": "No space left on device"}},
    {"on": "BLOCK_JOB_COMPLETED", "match": {"type": "mirror", "device": "m", "len": 0, "offset": 0,
                                            "speed": 0, "error": "Input/output error"}},
    {"on": "JOB_STATUS_CHANGE", "match": {"id": "m", "status": "ready"}},
    {"on": "BLOCK_WRITE_THRESHOLD", "match": {"node-name": "disk", "amount-exceeded": 1,
                                              "write-threshold": 2}},
])
def test_a_match_on_the_event_fields_is_accepted(action):
    assert load_scenario(base(**action)).actions[0].match == action["match"]


def test_every_event_has_its_fields():
    assert set(EVENT_FIELDS) == set(EVENTS)
    assert EVENT_FIELDS["STOP"] == EVENT_FIELDS["RESUME"] == {}
    assert list(EVENT_FIELDS["BLOCK_JOB_ERROR"]) == ["device", "operation", "action"]
    assert list(EVENT_FIELDS["BLOCK_IO_ERROR"]) == ["device", "node-name", "operation", "action",
                                                    "nospace", "reason"]


def test_a_job_on_an_image_names_the_drive_to_use():
    raw = base()
    raw["jobs"]["m"]["device"] = "disk"
    del raw["actions"]
    (key, msg), = problems(raw)
    assert key == "jobs.m.device"
    assert msg == ("'disk' is an image, not a drive: a job's device is a drive; "
                   "drive 'vda' has image 'disk': write device = \"vda\"")


def test_an_invalid_entry_still_has_its_names_checked():
    raw = base(on="STOP", match={"reason": "io-error"}, repeat="yes")
    raw["jobs"]["m"].update(device="nodrive", target="notarget", speed="fast")
    raw["faults"] = [{"image": "noimage", "errno": "EWHAT"}]
    raw["workloads"] = {"w": {"drive": "vdz", "bs": 1000}}
    assert [key for key, _ in problems(raw)] == [
        "jobs.m.device", "jobs.m.target", "jobs.m.speed", "actions.0.match.reason", "actions.0.repeat",
        "faults.0.image", "faults.0.errno", "workloads.w.drive", "workloads.w.bs"]
