"""The commit job: merge the upper layers of a backing chain into a lower one.

Modelled on QEMU 7.2's ``block-commit`` (``blockdev.c:qmp_block_commit``),
which runs one of two jobs, both of type ``"commit"``:

- **Intermediate commit** (:class:`CommitJob`, ``block/commit.c``), when
  ``top`` is below the drive's active layer.  ``commit_run`` walks the top's
  length in chunks of at most 512 KiB that follow allocation: a chunk is one
  run with the same answer to "allocated anywhere between ``top`` and the
  layer just above ``base``?" (``bdrv_is_allocated_above``).  An allocated
  chunk is read through ``top`` and written to ``base`` at the same offset,
  zeros included (7.2 has no write-zeroes path there, and never flushes the
  base).  Progress counts every chunk, copied or not, so ``offset`` ends at
  ``len`` (the top's size).  One ``on-error`` for both I/Os, and the
  BLOCK_JOB_ERROR's ``operation`` says which failed: ``read`` (the top) or
  ``write`` (the base).  ``stop`` pauses and, once resumed, retries the same
  chunk; ``ignore`` retries it at once, forever if the fault persists (no
  skip, no remembered error: a one-shot fault completes cleanly); ``report``
  fails the job.  There is no READY and no soft cancel: a plain
  ``block-job-cancel`` is a forced one.  On success the top's overlay is
  backed by ``base`` (the layers from ``top`` down to ``base`` drop out);
  after a cancel or an error the chain is unchanged but the base keeps the
  chunks already copied (``commit_abort``: "If we already wrote something to
  base, the intermediate images aren't valid any more").  Guest writes go to
  the active layer, which the job never reads.
- **Active commit** (:class:`ActiveCommitJob`, ``mirror.c:commit_active_start``),
  when ``top`` is the drive's active layer: the mirror's code with the base as
  target, ``on-source-error`` = ``on-target-error`` = ``on-error``,
  granularity = the base's cluster size within [4 KiB, 64 KiB], a 16 MiB
  buffer, and an initial dirty bitmap of what is allocated above the base.
  READY, then ``block-job-complete`` pivots the drive to the base (every
  layer above it leaves the drive's chain); a plain cancel once ready
  completes without the pivot.  It runs on the mirror's machinery, so the
  mirror's exact shortcuts (agenda, copy bursts) carry it.

The run verifies, when a commit completes, that the base reads as ``top``
did (``commit-base-holds-top``) and, for an intermediate commit, that the
drive reads the same after the layers are dropped.

Profiles: the ``rfc-2012`` profile runs 2012's block-commit (QEMU 1.3): no
``on-error`` (fixed to report; another value is refused as an unknown QMP
argument), every error reported as a read, and no active commit (refused).
"""

from __future__ import annotations

from types import SimpleNamespace

from ..errors import CommandError
from ..model.extents import diff_ranges
from ..model.policy import REPORT
from .base import BlockJob
from .mirror import MirrorJob, target_granularity

COMMIT_BUFFER_SIZE = 512 * 1024     # commit.c: COMMIT_BUFFER_SIZE
ACTIVE_BUF_SIZE = 16 * 1024 * 1024  # mirror.c: DEFAULT_MIRROR_BUF_SIZE


def make_commit_job(sim, job_id: str, spec):
    """The job ``block-commit`` runs: an active commit when ``top`` is the
    drive's active layer (qmp_block_commit compares it with the device's
    root node), an intermediate commit otherwise."""
    if spec.top == sim.drives[spec.device].node.name:
        return ActiveCommitJob(sim, job_id, spec)
    return CommitJob(sim, job_id, spec)


class _Commit:
    """What both commits share: the nodes, the QMP command and its checks."""

    job_type = "commit"
    integrity_invariant = "commit-base-holds-top"
    active = False

    def _commit_setup(self, sim, spec) -> None:
        self.on_error: str = spec.on_error
        self.top = sim.devices[spec.top]
        self.base = sim.devices[spec.base]
        self.backing_file: str | None = spec.backing_file

    def error_policies(self) -> dict[str, str]:
        return {"on-error": self.on_error}

    def qmp_start_command(self) -> str:
        return "block-commit"

    def qmp_start_arguments(self) -> dict:
        args = BlockJob.qmp_start_arguments(self)
        if not self.active:
            args["top-node"] = self.top.name
        args["base-node"] = self.base.name
        if self.backing_file is not None:
            args["backing-file"] = self.backing_file
        args["on-error"] = self.on_error
        return args

    def _span(self) -> list:
        """``top`` down to ``base``, both included, in the drive's chain now."""
        chain = self.drive.node.chain()
        if self.top not in chain:
            return []
        below = chain[chain.index(self.top):]
        return below[:below.index(self.base) + 1] if self.base in below else []

    def nodes(self) -> list:
        # commit_start / mirror_start_job: the device's root, top down to
        # base (intermediates included: they drop out when it completes)
        return [self.drive.node, *(n for n in self._span() if n is not self.drive.node)]

    def _commit_checks(self) -> None:
        """QEMU's refusals of block-commit for the chain as it is now (it may
        have changed since the scenario was written: an earlier commit or
        stream dropped layers, a mirror pivoted the drive), in the order of
        qmp_block_commit."""
        profile = self.profile
        if not profile.commit_on_error and self.on_error != "report":
            self.start_refused = True
            raise CommandError("Invalid parameter 'on-error'")
        chain = self.drive.node.chain()
        if self.top not in chain:
            self.start_refused = True
            raise CommandError(f"'{self.top.name}' is not in this backing file chain")
        if self.base not in chain[chain.index(self.top):]:
            self.start_refused = True
            raise CommandError(f"'{self.base.name}' is not in this backing file chain")
        if self.top is self.base:       # (the scenario's checks keep this out)
            self.start_refused = True
            raise CommandError("cannot commit an image into itself")
        if self.active:
            if self.backing_file is not None:
                self.start_refused = True
                raise CommandError("'backing-file' specified, but 'top' is the active layer")
            if not profile.active_commit:
                # 2012's commit_start (QEMU 1.3)
                self.start_refused = True
                raise CommandError("Top image as the active layer is currently unsupported")

    def _base_holds_top(self, top_layers) -> str | None:
        """Where the base, read through its own chain, differs from what
        ``top`` read (``top_layers``); None if nowhere."""
        size = self.top.size
        diffs = diff_ranges(top_layers, self.base.layers(), 0, size)
        first = next(diffs, None)
        if first is None:
            return None
        total = first[1] - first[0] + sum(b - a for a, b, _l, _r in diffs)
        return (f"base '{self.base.name}' differs from top '{self.top.name}' in {total} "
                f"bytes, first at offset {first[0]}")


class CommitJob(_Commit, BlockJob):
    """Intermediate commit (``block/commit.c``)."""

    main_node_is_device = True      # commit_start: block_job_create(..., bs, ...)

    def keeps_nodes_when_concluded(self) -> bool:
        # commit_abort calls block_job_remove_all_bdrv, commit_prepare does
        # not: a completed commit's nodes stay the job's until block_job_free
        return self.outcome == "completed"

    def __init__(self, sim, job_id: str, spec):
        super().__init__(sim, job_id, spec)
        self._commit_setup(sim, spec)
        self.size = 0
        self.overlay = None              # the node backed by top
        self.dropped: list = []          # top .. the layer above base, once completed
        self._layers: list = []          # top .. the layer above base (what is copied)

    def start(self) -> None:
        self._check_root()          # qmp_block_commit: qmp_get_root_bs first
        self._commit_checks()
        super().start()

    # -- the copy loop -------------------------------------------------------------
    def run(self):
        span = self._span()
        self._layers = span[:-1]
        top, base = self.top, self.base
        self.size = size = top.size
        delay = 0
        offset = 0
        while offset < size:
            # job_sleep_ns(delay_ns): no sleep once cancelled, none when a
            # pause is pending; one sleep, ended early by anything entering
            # the job (7.2 asks the limiter nothing more); then a pause point
            if self.is_cancelled():
                break
            if delay and not self.should_pause():
                yield from self.sleep(delay)
            yield from self.pause_point()
            if self.is_cancelled():
                break
            copy, n = self._chunk(offset)
            if copy:
                is_read = True
                err, runs = yield from top.read(offset, n, want_data=True, may_skip=True)
                if not err:
                    is_read = False
                    err = yield from base.write(offset, n, runs, may_skip=True)
                if err:
                    # commit_run: block_job_error_action(on_error,
                    # error_in_source, -ret); the 2012 code said "read" always
                    action = self.policy.job_error(
                        self, self.on_error, is_read or not self.profile.commit_on_error, err)
                    if action == REPORT:
                        return err
                    # stop (after the resume) and ignore: the same chunk
                    # again (n = 0), sleeping the previous delay_ns first
                    continue
                self.bytes_copied += n
            offset += n
            self.offset = offset          # job_progress_update(n), copied or not
            # only copied chunks count against the rate limit
            delay = self.limit.delay(self.env.now, n) if copy else 0
        return 0

    def _chunk(self, offset: int) -> tuple[bool, int]:
        """``bdrv_is_allocated_above(top, base_overlay, include_base=true,
        offset, 512 KiB)``: whether the run at ``offset`` is allocated in a
        layer from ``top`` down to the one above ``base``, and its length.
        The first layer (from the top) that has ``offset`` allocated gives
        its allocated run; each layer above it that does not shortens the
        run to its own unallocated one (unless that reaches the layer's end)."""
        end = min(offset + COMMIT_BUFFER_SIZE, self.size)
        for node in self._layers:
            if offset >= node.size:
                continue
            cs = node.cluster_size
            alloc = node.alloc
            c = offset // cs
            c_end = min(-(-end // cs), alloc.nclusters)
            state = alloc.is_set(c)
            run_end = _run_end(alloc, c, c_end, state) * cs
            if state:
                return True, min(end, run_end) - offset
            if run_end < node.size:
                end = min(end, run_end)
        return False, end - offset

    def progress_len(self) -> int:
        return self.size

    # -- ending --------------------------------------------------------------------
    def prepare(self) -> None:
        """commit_prepare -> bdrv_drop_intermediate: the overlay of ``top``
        is now backed by ``base``; check that the base holds what ``top``
        read and that the drive reads the same."""
        chain = self.drive.node.chain()
        overlay = self.overlay = chain[chain.index(self.top) - 1]
        before = self.drive.node.layers()
        top_layers = self.top.layers()
        self.dropped = list(self._layers)
        overlay.backing = self.base
        after = self.drive.node.layers()
        problems = []
        detail = self._base_holds_top(top_layers)
        if detail is not None:
            problems.append(detail)
        first = next(diff_ranges(before, after, 0, self.drive.node.size), None)
        if first is not None:
            problems.append(f"after dropping the committed layers the disk differs "
                            f"at offset {first[0]}")
        self.integrity = "differs" if problems else "identical"
        self.integrity_detail = "; ".join(problems) or None


def _run_end(alloc, c: int, c_end: int, state: bool) -> int:
    """The first cluster in ``(c, c_end]`` whose allocation differs from
    ``state`` (``c_end`` if none), by bisection on counts."""
    def uniform(b: int) -> bool:
        n = alloc.count_set(c, b)
        return n == b - c if state else n == 0
    if c_end <= c + 1 or uniform(c_end):
        return max(c_end, c + 1)
    lo, hi = c + 1, c_end          # uniform up to lo, not up to hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if uniform(mid):
            lo = mid
        else:
            hi = mid
    return lo


class ActiveCommitJob(_Commit, MirrorJob):
    """Active commit: the mirror with the base as target
    (``mirror.c:commit_active_start``)."""

    active = True
    resizes_target = True

    def __init__(self, sim, job_id: str, spec):
        base = sim.devices[spec.base]
        # commit_active_start -> mirror_start_job(target = base, speed,
        # granularity 0 (default), buf_size 0 (default), on_error, on_error)
        mirror_spec = SimpleNamespace(
            device=spec.device, speed=spec.speed, start=spec.start,
            auto_finalize=spec.auto_finalize, auto_dismiss=spec.auto_dismiss,
            target=spec.base, sync="full", granularity=target_granularity(base),
            buf_size=ACTIVE_BUF_SIZE, on_source_error=spec.on_error,
            on_target_error=spec.on_error)
        super().__init__(sim, job_id, mirror_spec)
        self.spec = spec
        self._commit_setup(sim, spec)

    def start(self) -> None:
        self._check_root()          # qmp_block_commit: qmp_get_root_bs first
        self._commit_checks()
        super().start()

    #: commit_active_start passes zero_target = false: the dirty bitmap is
    #: what is allocated above the base, whatever the base's discard mode
    zero_target = False

    def _dirty_layers(self, src) -> list:
        """mirror_dirty_init with a base: what is allocated from the top
        down to the layer above the base (zero_target is false for a
        commit, so never the whole disk)."""
        return self._span()[:-1]

    def _verify(self) -> None:
        """At completion the base reads exactly as the top (what the
        mirror checks of its target)."""
        detail = self._base_holds_top(self.source.layers())
        self.integrity = "identical" if detail is None else "differs"
        self.integrity_detail = detail
