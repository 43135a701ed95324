"""``transaction``: several commands as one, all or nothing.

QEMU's ``qmp_transaction`` (``blockdev.c``) is how libvirt starts a backup
together with its checkpoint: a ``blockdev-backup`` of each disk, a new
dirty bitmap added and the previous one disabled, so that the next
incremental backup starts exactly where this one's point in time is.  It

1. drains every node (``bdrv_drain_all``: every running job blips
   ``paused``/``running``, :func:`blocksim.jobs.drain_all`);
2. *prepares* each action in order: a bitmap command does its work and
   keeps what it needs to undo it (the bits a clear or merge replaced,
   whether a disabled bitmap was recording; a removed bitmap stays, busy,
   until the commit), a ``blockdev-backup`` creates its job (``created``,
   ``blockdev_backup_prepare``) without starting it;
3. if an action is refused, *aborts* those prepared, last first, and the
   command fails with that action's error: an added bitmap goes again, a
   created backup job ends ``aborting``, ``concluded``, ``null`` without
   ever running and without BLOCK_JOB_CANCELLED (observed on QEMU 7.2);
4. otherwise *commits* them in order: a removed bitmap goes, each backup
   job starts.

``completion-mode = "grouped"`` is refused by every bitmap action, with
QEMU's text (``action_check_completion_mode``); grouped backups (jobs that
finish or fail together) are not modelled, which the scenario's check says.

Not modelled: the guest writes in flight at the command land before any
action in QEMU (the drain waits for them); here they land when they
complete, so a bitmap the transaction adds records them and one it
disables does not.  Only a write in flight at that very instant differs.
"""

from __future__ import annotations

from ..errors import CommandError
from ..jobs import drain_all
from ..model import named_bitmap

def run(sim, arguments: dict, bitmap_node, backup_job=None) -> None:
    """Run ``transaction`` (``qmp_transaction``); ``bitmap_node(sim, node,
    command)`` finds a bitmap command's node as the commands on their own
    do (``block_dirty_bitmap_lookup``); ``backup_job(data)`` the job a
    blockdev-backup's data names (default: the scenario's job ``job-id``;
    ``blocksim serve`` builds it from QMP's arguments, and may refuse)."""
    entries = arguments.get("actions", [])
    grouped = arguments.get("properties", {}).get("completion-mode", "individual")
    if entries and not sim.profile.has_backup:
        # (QEMU 1.3's transaction knew only blockdev-snapshot-sync: none of
        # these; the 2012 profile answers as for the commands themselves)
        raise CommandError(f"The command {entries[0]['type']} has not been found",
                           "CommandNotFound")
    drain_all(sim)
    prepared: list = []             # (commit, abort) of each action prepared
    jobs = backup_job or (lambda d: sim.job_to_start(d["job-id"]))
    for entry in entries:
        kind, data = entry["type"], entry["data"]
        try:
            if kind == "abort":
                raise CommandError("Transaction aborted using Abort action")
            if kind == "blockdev-backup":
                job = jobs(data)
                job.create()
                prepared.append((job.begin, job.abort_created))
                continue
            if grouped != "individual":
                raise CommandError(f"Action '{kind}' does not support Transaction property "
                                   f"completion-mode = {grouped}")
            node = bitmap_node(sim, data.get("node"), kind)
            prepared.append(_BITMAP_ACTIONS[kind](node, data,
                                                  lambda name: bitmap_node(sim, name, kind)))
        except CommandError:
            # the failed action's own abort comes first: all that does
            # anything is an enable's (see _enable_failed)
            crash = _enable_failed(sim, data, grouped, bitmap_node) \
                if kind == "block-dirty-bitmap-enable" else None
            for _commit, abort in reversed(prepared):
                abort()
            if backup_job is None:
                _settle(sim, entries, refused=entries[entries.index(entry):])
            if crash is not None:
                raise crash from None
            raise
    for commit, _abort in prepared:
        commit()
    if backup_job is None:
        _settle(sim, entries, refused=[])


def _settle(sim, entries: list, refused: list) -> None:
    """The scenario's jobs after a transaction: a restart refused gives the
    ID back to the job that ran (Simulation.settle_start); a job never
    created by the actions ``refused`` (the failed one and those it never
    reached) counts as refused, its start command was."""
    for entry in entries:
        if entry["type"] == "blockdev-backup":
            sim.settle_start(entry["data"]["job-id"])
    for entry in refused:
        if entry["type"] == "blockdev-backup":
            job = sim.jobs[entry["data"]["job-id"]]
            if job.status is None:
                job.start_refused = True


def _enable_failed(sim, data: dict, grouped: str, bitmap_node) -> CommandError | None:
    """``block_dirty_bitmap_enable_abort`` on the enable that failed: it
    disables the bitmap unless it had been found recording
    (``was_enabled``, never set by a failed prepare).  A bitmap found busy
    is disabled so (a transaction's pending removal: its abort then leaves
    the bitmap disabled; a backup's frozen bitmap gets its state back from
    its successor when the job ends, so nothing lasts).  A bitmap the
    prepare never found (missing, on a missing node, or not looked up under
    ``completion-mode = "grouped"``) is disabled through a null pointer:
    QEMU 7.2 dies with SIGSEGV (checked on qemu-storage-daemon 7.2.22),
    which blocksim answers with the refusal returned here."""
    bitmap = None
    if grouped == "individual":
        try:
            bitmap = named_bitmap.lookup_bitmap(
                bitmap_node(sim, data.get("node"), "block-dirty-bitmap-enable"), data.get("name"))
        except CommandError:
            pass
    if bitmap is None:
        return CommandError(CRASH)
    if bitmap.successor is None:
        bitmap.recording = False
    return None


#: blocksim's answer where QEMU 7.2 dies
CRASH = ("QEMU 7.2 dies with SIGSEGV here: a transaction's block-dirty-bitmap-enable that "
         "failed before finding its bitmap (missing, or under completion-mode grouped) is "
         "aborted through a null pointer (block_dirty_bitmap_enable_abort); blocksim refuses "
         "the transaction instead, with every action undone")


def _nothing() -> None:
    """A phase an action does nothing in."""


def _add(node, data: dict, _lookup):
    """``block_dirty_bitmap_add_prepare``: added now, removed on abort."""
    bitmap = named_bitmap.add_bitmap(node, data.get("name", ""), data.get("granularity"),
                                     bool(data.get("persistent", False)),
                                     bool(data.get("disabled", False)))
    return _nothing, lambda: named_bitmap.release_bitmap(node, bitmap)


def _remove(node, data: dict, _lookup):
    """``block_dirty_bitmap_remove_prepare``: the bitmap stays, busy, until
    the commit releases it (a later action of the same transaction finds it
    there: "Bitmap already exists", or busy)."""
    bitmap = named_bitmap.hold_bitmap(node, data.get("name"))

    def commit() -> None:
        bitmap.held = False
        named_bitmap.release_bitmap(node, bitmap)

    def abort() -> None:
        bitmap.held = False
    return commit, abort


def _clear(node, data: dict, _lookup):
    """``block_dirty_bitmap_clear_prepare``: cleared now, its bits back on abort."""
    name = data.get("name")
    bits = named_bitmap.clear_bitmap(node, name)

    def abort() -> None:
        node.bitmaps[name].bits = bits
    return _nothing, abort


def _recording(enable: bool):
    """``block_dirty_bitmap_{enable,disable}_prepare``: set now, as it was on abort."""
    def prepare(node, data: dict, _lookup):
        name = data.get("name")
        was = named_bitmap.enable_bitmap(node, name, enable)

        def abort() -> None:
            node.bitmaps[name].recording = was
        return _nothing, abort
    return prepare


def _merge(node, data: dict, lookup):
    """``block_dirty_bitmap_merge_prepare``: merged now, the target's bits
    back on abort."""
    target = data.get("target")
    bits = named_bitmap.merge_bitmaps(node, target, merge_sources(node, data, lookup))

    def abort() -> None:
        node.bitmaps[target].bits = bits
    return _nothing, abort


def merge_sources(node, arguments: dict, lookup):
    """A merge's sources, ``(node, name)`` each, looked up as their turn
    comes: a string names a bitmap of ``node`` (``bdrv_find_dirty_bitmap``),
    ``{node, name}`` one of any node (``lookup(node)``)."""
    for ref in arguments.get("bitmaps", []):
        if isinstance(ref, str):
            yield node, ref
        else:
            yield lookup(ref.get("node")), ref.get("name")


_BITMAP_ACTIONS = {
    "block-dirty-bitmap-add": _add,
    "block-dirty-bitmap-remove": _remove,
    "block-dirty-bitmap-clear": _clear,
    "block-dirty-bitmap-enable": _recording(True),
    "block-dirty-bitmap-disable": _recording(False),
    "block-dirty-bitmap-merge": _merge,
}
