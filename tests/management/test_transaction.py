"""``transaction`` (blockdev.c ``qmp_transaction``): bitmap actions and
backups, prepared in order, all aborted at the first refusal, else all
committed.  Checked against QEMU 7.2 by scenarios/qemu/transaction-*.toml."""

import pytest

import blocksim
from blocksim.errors import ScenarioError
from jobcases import JOB, KiB, MiB, at, backup_case, commands, refusals, simulate, st, timeline


def tx(*actions, **properties) -> dict:
    """A transaction's arguments: ``(type, data)`` pairs."""
    arguments = {"actions": [{"type": kind, "data": data} for kind, data in actions]}
    if properties:
        arguments["properties"] = {k.replace("_", "-"): v for k, v in properties.items()}
    return arguments


def add(name, **keys):
    return ("block-dirty-bitmap-add", {"node": "src", "name": name, **keys})


def bitmap(kind, name):
    return (f"block-dirty-bitmap-{kind}", {"node": "src", "name": name})


BACKUP = ("blockdev-backup", {"job-id": JOB})


def case(*actions, **job) -> dict:
    """A manual backup of ``src`` (bitmap c0: the first 64 KiB dirty)."""
    job.setdefault("start", "manual")
    return backup_case(source_image={"format": "qcow2",
                                     "bitmaps": [{"name": "c0", "dirty": [
                                         {"offset": 0, "length": 64 * KiB}]}]},
                       actions=actions, speed=MiB, **job)


def transaction(time, arguments) -> dict:
    return {"at": time, "command": "transaction", "arguments": arguments}


def bitmaps(sim) -> dict:
    """Each of src's bitmaps: (recording, busy, count)."""
    return {name: (b.recording, b.busy, b.count) for name, b in sim.devices["src"].bitmaps.items()}


def test_a_refused_action_aborts_the_backup_created_before_it_and_rolls_back_the_bitmaps():
    sim, result = simulate(case(transaction("100ms", tx(add("c1"), bitmap("disable", "c0"),
                                                        BACKUP, add("c0")))))
    assert refusals(result) == [("transaction", "Bitmap already exists: c0")]
    # created by the backup's prepare, aborted without ever running: no
    # BLOCK_JOB_CANCELLED (observed on QEMU 7.2)
    assert timeline(result) == st("created", "aborting", "concluded", "null")
    assert bitmaps(sim) == {"c0": (True, False, 64 * KiB)}
    assert result.summary["jobs"][JOB]["outcome"] == "refused"


def test_a_committed_transaction_starts_the_backup_with_its_checkpoint():
    sim, result = simulate(case(transaction("100ms", tx(add("c1"), bitmap("disable", "c0"),
                                                        BACKUP)),
                                at("200ms", "guest-burst", drive="vda", rw="write",
                                   offset=3 * MiB, size=64 * KiB)))
    assert refusals(result) == []
    assert timeline(result) == [*st("created", "running", "paused", "running", "waiting",
                                    "pending"), ("BLOCK_JOB_COMPLETED", JOB, None),
                                *st("concluded", "null")]
    # c1 records from the transaction on, c0 (disabled) no more
    assert bitmaps(sim) == {"c0": (False, False, 64 * KiB), "c1": (True, False, 64 * KiB)}
    assert result.summary["jobs"][JOB]["integrity"] == "identical"


def test_an_aborted_job_may_be_started_again_with_its_id():
    sim, result = simulate(case(transaction("100ms", tx(BACKUP, ("abort", {}))),
                                transaction("200ms", tx(BACKUP))))
    assert refusals(result) == [("transaction", "Transaction aborted using Abort action")]
    assert timeline(result)[:8] == st("created", "aborting", "concluded", "null",
                                      "created", "running", "paused", "running")
    summary = result.summary["jobs"][JOB]
    assert (summary["outcome"], summary["integrity"]) == ("completed", "identical")


def test_every_bitmap_action_is_rolled_back():
    scenario = case(at("50ms", "block-dirty-bitmap-add", node="src", name="c9"),
                    at("60ms", "block-dirty-bitmap-disable", node="src", name="c9"),
                    transaction("100ms", tx(bitmap("clear", "c0"),
                                            ("block-dirty-bitmap-merge",
                                             {"node": "src", "target": "c9", "bitmaps": ["c0"]}),
                                            bitmap("disable", "c0"), bitmap("enable", "c9"),
                                            add("c5"), bitmap("remove", "c9"),
                                            bitmap("remove", "nosuch"))))
    sim, result = simulate(scenario)
    assert refusals(result) == [("transaction", "Dirty bitmap 'nosuch' not found")]
    assert bitmaps(sim) == {"c0": (True, False, 64 * KiB), "c9": (False, False, 0)}


def test_a_removal_holds_its_bitmap_until_the_commit():
    sim, result = simulate(case(
        transaction("100ms", tx(bitmap("remove", "c0"), add("c0"))),
        transaction("110ms", tx(bitmap("remove", "c0"), bitmap("clear", "c0"))),
        transaction("120ms", tx(bitmap("remove", "c0"), add("c1")))))
    assert refusals(result) == [
        ("transaction", "Bitmap already exists: c0"),
        ("transaction", "Bitmap 'c0' is currently in use by another operation and cannot be used")]
    assert bitmaps(sim) == {"c1": (True, False, 0)}


def test_grouped_is_refused_by_bitmap_actions_and_nothing_stays():
    sim, result = simulate(case(transaction("100ms", tx(BACKUP, add("c1"),
                                                        completion_mode="grouped"))))
    assert refusals(result) == [
        ("transaction", "Action 'block-dirty-bitmap-add' does not support Transaction property "
                        "completion-mode = grouped")]
    assert timeline(result) == st("created", "aborting", "concluded", "null")
    assert bitmaps(sim) == {"c0": (True, False, 64 * KiB)}


@pytest.mark.parametrize("mode, count", [("always", 4 * MiB), ("on-success", 64 * KiB),
                                         ("never", 64 * KiB)])
def test_an_aborted_bitmap_backup_settles_its_bitmap_as_qemu(mode, count):
    # backup_cleanup_sync_bitmap with an error: "always" installs the empty
    # successor and merges the block-copy bitmap, still all dirty as
    # block_copy_state_new made it (backup_run never ran); the others
    # reclaim: nothing changes
    sim, result = simulate(case(transaction("100ms", tx(BACKUP, ("abort", {}))),
                                sync="bitmap", bitmap="c0", bitmap_mode=mode))
    assert bitmaps(sim) == {"c0": (True, False, count)}


def test_an_empty_transaction_succeeds_and_drains_every_node():
    scenario = backup_case(actions=[transaction("300ms", tx())], speed=MiB)
    sim, result = simulate(scenario)
    assert commands(result, "transaction") == [
        {"execute": "transaction", "arguments": {"actions": [],
                                                  "properties": {"completion-mode": "individual"}},
         "source": "actions.0", "return": {}}]
    # (bdrv_drain_all: the running backup blips)
    assert timeline(result)[4:6] == st("paused", "running")


def test_the_2012_monitor_has_none_of_these_actions():
    sim, result = simulate(case(transaction("100ms", tx(add("c1")))), profile="rfc-2012")
    assert refusals(result)[-1] == ("transaction",
                                    "The command block-dirty-bitmap-add has not been found")


@pytest.mark.parametrize("arguments, where, words", [
    (tx(("snapshot", {})), "actions.0.arguments.actions.0.type",
     "Input should be 'abort', 'block-dirty-bitmap-add'"),
    ({"actions": [{"data": {}}]}, "actions.0.arguments.actions.0.type", "required key is missing"),
    (tx(("block-dirty-bitmap-add", {"node": "src"})), "actions.0.arguments.actions.0.data.name",
     "required key is missing"),
    (tx(("block-dirty-bitmap-add", {"node": "src", "name": "x", "size": 1})),
     "actions.0.arguments.actions.0.data.size",
     "unknown argument for command 'block-dirty-bitmap-add'"),
    (tx(("block-dirty-bitmap-clear", {"node": "nonode", "name": "x"})),
     "actions.0.arguments.actions.0.data.node", "unknown node 'nonode'"),
    (tx(("blockdev-backup", {"job-id": "nope"})), "actions.0.arguments.actions.0.data.job-id",
     "'nope' is not a backup job of [jobs]"),
    (tx(BACKUP, completion_mode="grouped"), "actions.0.arguments.properties",
     "completion-mode 'grouped' of backups"),
])
def test_bad_transactions_are_refused_by_the_scenario_check(arguments, where, words):
    with pytest.raises(ScenarioError) as info:
        blocksim.load_scenario(case(transaction("100ms", arguments)))
    problems = info.value.problems
    assert len(problems) == 1 and problems[0][0] == where and words in problems[0][1], problems


def test_abort_and_backups_are_not_refused_by_grouped():
    # (action_check_completion_mode is the bitmap actions' only)
    sim, result = simulate(case(transaction("100ms", tx(("abort", {}),
                                                        completion_mode="grouped"))))
    assert refusals(result) == [("transaction", "Transaction aborted using Abort action")]


def test_a_failed_enable_of_a_bitmap_being_removed_leaves_it_disabled():
    # block_dirty_bitmap_enable_abort runs for the failed enable too, and
    # disables what it found (was_enabled unset): checked on QEMU 7.2.22
    sim, result = simulate(case(transaction("100ms", tx(bitmap("remove", "c0"),
                                                        bitmap("enable", "c0")))))
    assert refusals(result) == [
        ("transaction", "Bitmap 'c0' is currently in use by another operation and cannot be used")]
    assert bitmaps(sim) == {"c0": (False, False, 64 * KiB)}


def test_a_failed_enable_of_a_backups_bitmap_changes_nothing_that_lasts():
    # (a frozen bitmap's state comes back from its successor at the end)
    sim, result = simulate(case(transaction("100ms", tx(BACKUP)),
                                transaction("100ms", tx(bitmap("enable", "c0"))),
                                at("300ms", "guest-burst", drive="vda", rw="write",
                                   offset=3 * MiB, size=64 * KiB),
                                sync="bitmap", bitmap="c0", bitmap_mode="never"))
    assert refusals(result)[0][1].startswith("Bitmap 'c0' is currently in use")
    assert bitmaps(sim) == {"c0": (True, False, 128 * KiB)}


@pytest.mark.parametrize("data, properties", [
    ({"node": "src", "name": "nosuch"}, {}),
    ({"node": "src", "name": "c0"}, {"completion_mode": "grouped"})])
def test_an_enable_that_never_found_its_bitmap_is_where_qemu_dies(data, properties):
    # QEMU 7.2 aborts it through a null pointer (SIGSEGV, checked on
    # qemu-storage-daemon 7.2.22): refused here, everything undone
    sim, result = simulate(case(transaction("100ms", tx(BACKUP, ("block-dirty-bitmap-enable", data),
                                                        **properties))))
    (refusal,) = refusals(result)
    assert refusal[1].startswith("QEMU 7.2 dies with SIGSEGV here")
    assert bitmaps(sim) == {"c0": (True, False, 64 * KiB)}


def test_the_backups_a_refused_transaction_never_reached_count_as_refused():
    scenario = case(transaction("100ms", tx(bitmap("remove", "nosuch"), BACKUP)))
    sim, result = simulate(scenario)
    assert timeline(result) == []
    assert result.summary["jobs"][JOB]["outcome"] == "refused"
