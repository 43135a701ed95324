"""The stream job: pull a backing chain's data into the top image.

Modelled on QEMU's ``block/stream.c`` (``stream_run``).  The job walks the
disk by runs of one allocation status, each at most 512 KiB: from the current
offset, the run that is allocated in the top image, or not
(``bdrv_is_allocated``, capped at ``STREAM_CHUNK``), is skipped when it is;
otherwise the layers between the top and the ``base`` are asked about that
run (``bdrv_is_allocated_above``, which shortens it to where any of them
changes), and a run allocated in one of them is copied on read: read through
the chain, written into the top image's still-unallocated clusters (never
over data the guest wrote meanwhile).  A run allocated nowhere is skipped.
So the job reads only what it copies: a fault where the chain holds nothing,
or where the top already has the data, is never met.

Errors go through the policy engine with the single ``on-error`` and are
always reported as ``operation: read`` (QEMU reports the copy-on-read, even
when the write into the top image is what failed):

- ``stop``: the job pauses; after resume it retries the *same* chunk;
- ``ignore``: the chunk is skipped, the first error remembered; the job runs
  to the end and then completes *with* that error, keeping the backing file;
- ``report``: the job stops at once and completes with the error.

On success the top image's backing file becomes ``base`` (none by default):
the run checks that the disk reads the same before and after, that is, that
the top image no longer needs what was dropped.
"""

from __future__ import annotations

from ..errors import CommandError
from ..model.extents import diff_ranges
from ..model.policy import REPORT, STOP
from .base import BlockJob

STREAM_CHUNK = 512 * 1024


class StreamJob(BlockJob):
    job_type = "stream"
    integrity_invariant = "stream-independent"
    inserts_filter = True           # stream_start: a copy-on-read filter above top
    create_drains = 1               # stream_start: bdrv_insert_node's drained section

    #: Drained sections of the stream's end over the disk (observed on QEMU
    #: 7.2: a backup of the disk blips four times at a stream's success,
    #: three at its cancel): bdrv_cor_filter_drop, the job's nodes let go
    #: (block_job_remove_all_bdrv) and, on success only, stream_prepare's
    #: bdrv_subtree_drained_begin(above_base) around bdrv_set_backing_hd.
    end_drains = {True: 4, False: 3}

    def keeps_nodes_when_concluded(self) -> bool:
        # stream.c never calls block_job_remove_all_bdrv: the "active node"
        # (its device's node) and the intermediate nodes stay the job's
        # until block_job_free
        return True

    def __init__(self, sim, job_id: str, spec):
        super().__init__(sim, job_id, spec)
        self.on_error: str = spec.on_error
        self.base = sim.devices[spec.base] if spec.base else None
        self.top = None
        self._below: list = []          # layers between top and base
        self.size = 0

    def error_policies(self) -> dict[str, str]:
        return {"on-error": self.on_error}

    def qmp_start_command(self) -> str:
        return "block-stream"

    def qmp_start_arguments(self) -> dict:
        args = super().qmp_start_arguments()
        if self.base is not None:
            args["base-node"] = self.base.name
        args["on-error"] = self.on_error
        return args

    def start(self) -> None:
        # blockdev.c qmp_block_stream: the base-node must be below the
        # device in its chain as it is now (an earlier stream or commit may
        # have dropped it), checked before the op blockers (found by running
        # QEMU 7.2: grammar 8, fz8-153; stream-base-dropped-by-earlier-stream)
        node = self.drive.node
        if self.base is not None and (self.base is node or self.base not in node.chain()):
            self.start_refused = True
            raise CommandError(f"Node '{self.base.name}' is not a backing image of "
                               f"'{node.name}'")
        super().start()

    def run(self):
        top = self.top = self.drive.node
        self.size = size = top.size
        self._below = self._intermediates()     # fixed until prepare() drops them
        error = 0
        offset = 0
        while offset < size:
            yield from self.pause_point()
            if self.cancelled:
                break
            n, copy = self._next_run(offset, size)
            if copy:
                err = yield from self._populate(offset, offset + n)
                if err:
                    action = self.policy.job_error(self, self.on_error, True, err)
                    if action == STOP:
                        continue                  # the same offset after resume, asked again
                    error = error or err
                    if action == REPORT:
                        break
                    # ignore: skip the run; as in QEMU the attempt still
                    # counts as progress and against the rate limit
                else:
                    self.bytes_copied += n
            offset += n
            self.offset = offset
            if copy:
                delay = self.limit.delay(self.env.now, n)
                # QEMU's stream_run sleeps off the rate limit at the start of
                # the next iteration: after the last run there is none
                if delay and offset < size:
                    yield from self.ratelimit_sleep(delay)
        return error

    def _intermediates(self) -> list:
        """Layers between the top (excluded) and the base (excluded)."""
        out, node = [], self.top.backing
        while node is not None and node is not self.base:
            out.append(node)
            node = node.backing
        return out

    def _next_run(self, offset: int, size: int) -> tuple[int, bool]:
        """The bytes from ``offset`` the next iteration covers, and whether
        it copies them (``stream_run``'s two allocation questions)."""
        end = min(offset + STREAM_CHUNK, size)
        allocated, end = self._run_in(self.top, offset, end)
        if allocated:
            return end - offset, False
        # bdrv_is_allocated_above(backing, base_overlay, include_base=true):
        # each layer down shortens the run to where its own status changes;
        # the first layer holding the offset decides
        for node in self._below:
            if offset >= node.size:
                # a short layer: bdrv_co_common_block_status_above reads
                # what lies past its end as zeros allocated there
                return end - offset, True
            allocated, end = self._run_in(node, offset, min(end, node.size))
            if allocated:
                return end - offset, True
        return end - offset, False

    @staticmethod
    def _run_in(node, start: int, end: int) -> tuple[bool, int]:
        """Whether ``start`` is allocated in ``node``, and where in
        ``(start, end]`` that changes (at a cluster boundary)."""
        cs = node.cluster_size
        allocated, c = node.alloc.run_at(start // cs, -(-end // cs))
        return allocated, min(end, c * cs)

    def _populate(self, start: int, end: int):
        """Copy-on-read of one chunk into the top image.

        The job's process is resumed only by its own events (these two
        waits, its sleeps and pauses, each an event of its own that nothing
        else waits for; commands only set flags and wake those), so its
        waits may take the clock's shortcut when nothing else is due before
        they end (blocksim.engine.clock)."""
        top = self.top
        err, runs = yield from top.read(start, end - start, want_data=True, may_skip=True)
        if err:
            return err
        runs = [r for r in runs if r[2]]
        if not runs:
            return 0
        return (yield from top.write(start, end - start, runs, fill=True, may_skip=True))

    def progress_len(self) -> int:
        return self.size

    def abort(self) -> None:
        for _ in range(self.end_drains[False]):
            self.drained_section("disk")

    def prepare(self) -> None:
        for _ in range(self.end_drains[True]):
            self.drained_section("disk")
        top = self.top
        before = top.layers()
        top.backing = self.base
        after = top.layers()
        first = next(diff_ranges(before, after, 0, top.size), None)
        if first is None:
            self.integrity = "identical"
        else:
            self.integrity = "differs"
            self.integrity_detail = (f"after dropping the backing file the disk differs "
                                     f"at offset {first[0]}")
