"""The virtual machine: its run state, and what stop and cont do to guest I/O.

Run states follow QMP's ``query-status``: ``running``, ``paused`` (stopped by
the user) and ``io-error`` (stopped by a ``stop`` error policy).

Stopping the VM (QEMU's ``do_vm_stop``) pauses the vCPUs, so guests issue no
new requests, emits ``STOP`` and then drains.  A guest's ``stop`` error only
*requests* the stop (``qemu_system_vmstop_request``), which the main loop
carries out once the I/O completions of that moment are done: the guest
stops at once here (no new request), but ``STOP`` is announced after the
events already due at this instant (``stop(..., announce_later=True)``), so
two requests failing together give two ``BLOCK_IO_ERROR`` then one ``STOP``,
as on a QEMU 7.2 VM; a ``cont`` before that announces it first
(``vm_prepare_start`` sends ``STOP`` then ``RESUME`` when a stop request is
pending).  After the ``STOP`` QEMU drains: requests already in flight run
to completion and may fail too, each failure going through the error policy
and possibly emitting more ``BLOCK_IO_ERROR`` events after ``STOP`` (the
clobbering the 2012 note warns about).  A request failed with ``stop`` is
parked and resubmitted when the VM continues.

``cont`` resets every drive's io-status (and every node's, which only the
``rfc-2012`` profile sets; the monitor's ``cont`` also resets every block
job's, blocksim.management.monitor), sets the state back to running,
emits ``RESUME`` and wakes the parked requests and the guest workloads.  Block
jobs are not paused with the VM: they keep running.
"""

from __future__ import annotations


class VM:
    def __init__(self, env, log):
        self.env = env
        self.log = log
        self.state = "running"
        self.drives: dict = {}
        self.nodes: list = []           # every node (BlockDevice), for cont
        self._running = env.event()
        self._running.succeed()
        self.stops = 0
        self.paused_ns = 0
        self._paused_since: int | None = None
        #: the summary's pause figures: stops by an error policy (io-error),
        #: and the longest pause that ended
        self.io_error_stops = 0
        self.longest_pause_ns = 0
        #: a stop whose STOP event is still to come (announce_later)
        self._unannounced = False

    def wait_running(self):
        """An event that fires when the VM runs (already fired if it does)."""
        return self._running

    def stop(self, reason: str = "paused", announce_later: bool = False) -> None:
        """Stop the VM.  With ``announce_later`` (a stop requested by an
        error policy, served by QEMU's main loop) the STOP event comes after
        the events already due at this instant."""
        if self.state != "running":
            return                      # already stopped: no second STOP
        self.state = reason
        self.stops += 1
        if reason == "io-error":
            self.io_error_stops += 1
        self._paused_since = self.env.now
        self._running = self.env.event()
        if announce_later:
            self._unannounced = True
            self.env.timeout(0).callbacks.append(self._announce)
        else:
            self.log.emit("STOP", {})

    def _announce(self, _event=None) -> None:
        if self._unannounced:
            self._unannounced = False
            self.log.emit("STOP", {})

    def cont(self) -> None:
        # qmp_cont resets every drive's io-status (7.2: each BlockBackend's;
        # 2012: bdrv_iterate over every BlockDriverState, so a node's too,
        # which only the rfc-2012 profile ever sets).
        for drive in self.drives.values():
            drive.iostatus.reset()
        for node in self.nodes:
            node.iostatus.reset()
        if self.state == "running":
            return
        self.paused_ns += self.env.now - self._paused_since
        self.longest_pause_ns = max(self.longest_pause_ns, self.env.now - self._paused_since)
        self._paused_since = None
        self.state = "running"
        self._announce()                # (a stop not yet announced: STOP, then RESUME)
        self.log.emit("RESUME", {})
        self._running.succeed()

    def time_paused(self, now: int) -> int:
        extra = now - self._paused_since if self._paused_since is not None else 0
        return self.paused_ns + extra
