"""qemu-check does not replay a poll (an action with ``every``): it is named
as skipped, and the blocksim side of the comparison leaves it out too."""

from blocksim import load_scenario
from blocksim.qemu.translate import translate


def test_a_poll_is_named_as_skipped():
    s = load_scenario({
        "images": {"src": {"size": "4MiB", "data": "full"}, "dst": {"size": "4MiB"}},
        "drives": {"vda": {"image": "src"}},
        "jobs": {"m": {"type": "mirror", "device": "vda", "target": "dst"}},
        "actions": [{"at": "0s", "every": "1s", "command": "block-job-set-speed",
                     "arguments": {"device": "m", "speed": 0}},
                    {"at": "2s", "command": "block-job-cancel", "arguments": {"device": "m"}}]})
    plan = translate(s)
    skipped = {x.what.split(" ")[0]: x.reason for x in plan.skipped}
    assert "every" in skipped["actions.0"]
    assert [a.command for a in plan.reduced.actions] == ["block-job-cancel"]
