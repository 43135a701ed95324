"""io-status: the error state a drive or a block job publishes over QMP.

Values are ``ok``, ``failed`` and ``nospace`` (the error was ENOSPC).  Today's
QEMU keeps the *first* error since the last reset (``blk_iostatus_set_err``
and ``block_job_iostatus_set_err`` only act while the status is ``ok``).  The
2012 design note lets a job's status only move up a ranking; the ``rfc-2012``
profile asks for that with ``ranked=True``.  The note's
``block_job_iostatus_set_err`` ranks by the C enum ``BlockDeviceIoStatus``
(``job->iostatus < new_status``), declared ``ok, failed, nospace`` in the
QAPI schema since 1.0 (``qapi/block-core.json``), so the code ranks
ok < failed < nospace, whatever its comment ("ok, nospace, failed") says.
We follow the code (:data:`_RANK`).

A drive's status resets on ``cont``; a job's on ``block-job-resume``; a
node's (set by a 2012 job's ``stop`` on a node that is not the job's own,
``bdrv_iostatus_set_err``) on ``cont``.  Every change is kept in ``history``
so the invariant checker can prove stickiness.
"""

from __future__ import annotations

import errno as _errno

OK, NOSPACE, FAILED = "ok", "nospace", "failed"
#: The ranking of ``ranked`` statuses: ``BlockDeviceIoStatus``'s enum values
#: (ok, failed, nospace), which the 2012 note's code compares.
_RANK = {OK: 0, FAILED: 1, NOSPACE: 2}


class IoStatus:
    __slots__ = ("value", "ranked", "history", "_clock")

    def __init__(self, clock, ranked: bool = False):
        self.value = OK
        self.ranked = ranked
        self._clock = clock                 # a callable giving simulated now
        #: (time_ns, old, new, why) for every change, "why" being set or reset
        self.history: list[tuple[int, str, str, str]] = []

    def set_err(self, err: int) -> None:
        new = NOSPACE if err == _errno.ENOSPC else FAILED
        if self.value == OK or (self.ranked and _RANK[new] > _RANK[self.value]):
            self._change(new, "set")

    def reset(self) -> None:
        if self.value != OK:
            self._change(OK, "reset")

    def _change(self, new: str, why: str) -> None:
        self.history.append((self._clock(), self.value, new, why))
        self.value = new
