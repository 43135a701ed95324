"""Rate limiting of block jobs by their ``speed`` (bytes per second).

Models QEMU's slice-based limiter (``util/ratelimit``): each 100 ms slice
allows ``speed * 0.1 s`` bytes; a job that dispatched more is told to sleep
until the (possibly stretched) slice ends.  Speed 0 means unlimited.
"""

from __future__ import annotations

SLICE_NS = 100_000_000          # BLOCK_JOB_SLICE_TIME


class RateLimit:
    __slots__ = ("speed", "slice_quota", "slice_start", "slice_end", "dispatched")

    def __init__(self, speed: int = 0):
        self.slice_start = self.slice_end = 0
        self.dispatched = 0
        self.set_speed(speed)

    def set_speed(self, speed: int) -> None:
        self.speed = speed
        self.slice_quota = speed * SLICE_NS // 1_000_000_000

    def delay(self, now: int, nbytes: int) -> int:
        """Account ``nbytes`` dispatched now; nanoseconds to wait (0 = go on)."""
        if not self.speed:
            return 0
        # QEMU resets when ``slice_end_time < now`` on its real-time clock.
        # A job that slept out a stretched slice wakes on a timer, which
        # always fires a little after its deadline, so in QEMU the next call
        # starts a fresh slice: the job copies in bursts of one slice's
        # quota.  Simulated timers fire exactly on time, so ``<=`` is the
        # same behaviour here.  With ``<`` the slice would stay stretched and
        # every later request would sleep on its own.
        if self.slice_end <= now:
            self.slice_start = now
            self.slice_end = now + SLICE_NS
            self.dispatched = 0
        self.dispatched += nbytes
        if self.dispatched < self.slice_quota:
            return 0
        slices = self.dispatched / max(self.slice_quota, 1)
        self.slice_end = self.slice_start + int(slices * SLICE_NS)
        # After a set-speed the stretched slice can already be over: QEMU's
        # job_sleep_ns then arms a timer in the past, i.e. does not wait.
        return max(self.slice_end - now, 0)

    def wait(self, now: int) -> int:
        """What ``delay(now, 0)`` would return, without asking it: the
        nanoseconds a job asking now must sleep (0 = go on).  When that is
        a sleep, ``delay(now, 0)`` itself changes nothing but the slice's
        end, set to the end this computes (the same unless the speed
        changed); when it is 0 it may start a new slice."""
        if not self.speed or self.slice_end <= now or self.dispatched < self.slice_quota:
            return 0
        slice_end = self.slice_start + int(self.dispatched / max(self.slice_quota, 1) * SLICE_NS)
        return max(slice_end - now, 0)

    def asked(self, now: int, ns: int) -> None:
        """``delay(now, 0)`` where ``wait(now)`` said ``ns`` (> 0): the
        slice's end set to ``now + ns``, the end ``delay`` computes (the
        same formula, nothing else dispatched), with no second computation
        (a backup's pass waking only to sleep again: BackupJob._sleeps_again)."""
        self.slice_end = now + ns
