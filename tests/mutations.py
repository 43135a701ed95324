"""Mutation checks for the exact shortcuts: does every rule have a test that bites?

    python tests/mutations.py            # all mutations, about fifteen minutes
    python tests/mutations.py burst      # those whose name contains "burst"

The shortcuts (the clock's skips, quiet stretches, the mirror's agenda and
its copy bursts, compiled or not, the content journal) are only as
trustworthy as the tests that compare them with the one-by-one run.  Each
mutation below breaks one of their rules by a small edit, in a scratch copy
of the project (the working tree is never touched), and runs the shortcut
tests there.  A mutation is *caught* when a test fails
(or the run hangs); a *survivor* is a rule no test checks, and a *stale*
mutation no longer matches the code (update it with the code).

Not collected by pytest (no ``test_`` prefix): it runs the suite, it is not
part of it.  Exits 1 if any mutation survived or is stale.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/jobs/test_backup_sleeps.py", "tests/engine/test_clock.py", "tests/engine/test_stretch.py",
         "tests/engine/test_steps.py", "tests/engine/test_copyloop.py", "tests/engine/test_filtered.py",
         "tests/engine/test_backup_kernel.py", "tests/engine/test_agenda.py", "tests/model/test_faults.py",
         "tests/engine/test_burst.py", "tests/jobs/test_mirror.py", "tests/model/test_profiles.py",
         "tests/system/test_shortcuts_random.py", "tests/engine/test_journal.py", "tests/model/test_bitmap.py",
         "tests/jobs/test_stream.py", "tests/jobs/test_job_lifecycle.py", "tests/engine/test_burst_kernel.py",
         "tests/jobs/test_job_verbs_same_instant.py", "tests/model/test_write_threshold.py",
         "tests/engine/test_rate_phases_shortcuts.py",
         "tests/jobs/test_backup.py", "tests/record/test_invariants.py",
         "tests/model/test_allocation.py", "tests/engine/test_bulk_settle.py",
         "tests/model/test_ledger.py", "tests/model/test_extents.py"]
TIMEOUT = 300

# (name, file, text, replacement): each text must occur exactly once.
MUTATIONS = [
    ("kernel: ties with SimPy's head ignored", 'blocksim/engine/burst_kernel.py',
     'if t > st[HEAD_T] or (t == st[HEAD_T] and eid > st[LAST_EID]):',
     'if t > st[HEAD_T]:'),
    ('kernel: an overlap with an operation in flight ignored', 'blocksim/engine/burst_kernel.py',
     '    if last_end > b:\n        st[AWAITED] = last_seq          # (the loop waits for that one)\n'
     '        return False\n',
     ''),
    ('kernel: a ready mirror throttled', 'blocksim/engine/burst_kernel.py',
     '    return 0 if st[SYNCED] else delay',
     '    return delay'),
    # (gone since session 13: "a wake-up marked while detached"; the loop
    # now waits for one operation, MirrorJob._awaited, and is attached
    # whenever it waits, so no wake-up can be marked while detached)
    ("kernel: the loop's checks ignored at a wake-up", 'blocksim/engine/burst_kernel.py',
     '                elif st[STOP_AT_TOP]:\n                    return 0\n',
     ''),
    ('kernel: a page not known to hold data read as data', 'blocksim/engine/burst_kernel.py',
     '            if not safe[p]:\n                st[PAGE] = p\n                return -2\n',
     ''),
    # (gone since issue 17: "a page with zeros logged taken for data" in
    # ExtentMap.holds_data; a copy now writes zeros as data, as QEMU's
    # mirror_read_complete does, so reading such a page in the kernel gives
    # the same run and the check is only a conservative restriction)
    ('kernel: what is known of pages kept across their changes', 'blocksim/engine/burst_kernel.py',
     '        if stamp != self.stamp:',
     '        if self.stamp is None:'),
    ('kernel: reads in flight not handed in before a settle', 'blocksim/engine/burst_kernel.py',
     '        content._journal._before_settle.append(self.hand_in)\n',
     ''),
    ("kernel: a paste does not count in its page's log", 'blocksim/engine/burst_kernel.py',
     '            loglen[p] += 2\n            tgt_pending[p] = 1\n',
     '            tgt_pending[p] = 1\n'),
    ('kernel: a write of a Python object pasted by the kernel', 'blocksim/engine/burst_kernel.py',
     '        elif kind == WRITE_DONE and ops[slot, MODE] == OBJECT:\n            return -6               # (what it pastes is a Python object)\n',
     ''),
    ('kernel: the byte search aligned on four bytes', 'blocksim/engine/bitmap_blocks.py',
     '    while i < stop and i & 7:',
     '    while i < stop and i & 3:'),
    ("kernel: a device's queue one slot deeper", 'blocksim/engine/burst_kernel.py',
     '    if n >= st[base + 2]:',
     '    if n > st[base + 2]:'),
    ('kernel: no allocation on a target not full', 'blocksim/engine/burst_kernel.py',
     '            if not st[TGT_FULL]:\n',
     '            if False:\n'),
    ('kernel: the pipe ignored', 'blocksim/engine/burst_kernel.py',
     '    if t < st[base + 3]:\n        t = st[base + 3]\n',
     ''),
    ("job: a node held by another job is free", "blocksim/jobs/base.py",
     "            if not other.holds_nodes():",
     "            if True:"),
    ("job: a job entered early sleeps off the rest (QEMU 8.0)", "blocksim/jobs/base.py",
     "        yield from self._sleep_off(delay, timer)\n        yield from self._pause_point()",
     "        while delay and not self.is_cancelled():\n            yield from self._sleep_off(delay, timer)\n"
     "            yield from self._pause_point()\n            delay = self.limit.delay(self.env.now, 0)\n"
     "            timer = None"),
    ("mirror: a pause does not wait for the copies in flight", "blocksim/jobs/mirror.py",
     "        while self.in_flight and (self.should_pause() or self.drain_pause_due()):\n"
     "            yield from self._wait_op()\n", ""),
    ("mirror: a ready mirror sleeps off its speed", "blocksim/jobs/mirror.py",
     "        return 0 if self.synced else delay", "        return delay"),
    ("mirror: the poll's sleep with data dirtied during the flush", "blocksim/jobs/mirror.py",
     "                        if not bm.count:\n                            # (the agenda runs itself",
     "                        if True:\n                            # (the agenda runs itself"),
    ("burst: a target not full at the start taken for full", "blocksim/engine/burst.py",
     "tgt_full = tgt_alloc.count == tgt_alloc.nclusters", "tgt_full = True"),
    ("bitmap (19.4): clearing one granule leaves its block flagged", "blocksim/model/bitmap.py",
     "                slot = 0\n                self.blocks[blk] = 0\n",
     "                slot = 0\n"),
    ("bitmap (19.4): a whole dirty block cleared in one granule materialised clean",
     "blocksim/model/bitmap.py",
     "            if c == BLOCK:                  # materialise: all dirty\n"
     "                slot = self._take_slot(_ONES)\n",
     "            if c == BLOCK:\n                slot = self._take_slot(_ZEROS)\n"),
    ("bitmap (19.4): a clean block marked in one granule materialised dirty",
     "blocksim/model/bitmap.py",
     "            if not c:                       # materialise: all clean\n"
     "                slot = self._take_slot(_ZEROS)\n",
     "            if not c:\n                slot = self._take_slot(_ONES)\n"),
    ("bitmap (19.4): a range cleared in a whole dirty block materialised clean",
     "blocksim/model/bitmap.py",
     "                    slot = self._take_slot(_ONES)\n", "                    slot = self._take_slot(_ZEROS)\n"),
    ("bitmap: the search reads a whole dirty block's bytes", "blocksim/model/bitmap.py",
     "        if c == BLOCK:\n            return b0 if b0 < b1 else -1\n        found",
     "        found"),
    ("bitmap (19.4): a dirty run reads a whole dirty block's bytes", "blocksim/model/bitmap.py",
     "            if v != BLOCK:\n                if not v:", "            if True:\n                if not v:"),
    ("bitmap: runs of whole blocks merged across a mixed one", "blocksim/model/bitmap.py",
     "(np.diff(nz) == 1) & full[1:] & full[:-1]", "(np.diff(nz) == 1) & full[1:]"),
    # (the quiet stretch's mark is bitmap_blocks._mark, the guest's in the
    # kernel: what is left of its own is the granules a write covers)
    ("bitmap (19.4): a quiet stretch's mark leaves a write's partial last granule clean",
     "blocksim/model/bitmap.py",
     "range(offset // granularity, (offset + length + granularity - 1) // granularity)",
     "range(offset // granularity, (offset + length) // granularity)"),
    ("bitmap kernel (19.4): the guest's mark materialises a clean block dirty",
     "blocksim/engine/bitmap_blocks.py",
     "    if c == 0:                          # materialise: all clean\n"
     "        slot = _take_slot(bits, 0)\n",
     "    if c == 0:\n        slot = _take_slot(bits, 1)\n"),
    ("bitmap kernel (19.4): a claim cutting into a whole dirty block materialises it clean",
     "blocksim/engine/burst_kernel.py",
     "            if c == BLOCK:\n                slot = _take_slot(bits, 1)\n",
     "            if c == BLOCK:\n                slot = _take_slot(bits, 0)\n"),
    ("bitmap kernel: the search reads a whole dirty block's bytes", "blocksim/engine/burst_kernel.py",
     "    if c == BLOCK:\n        return b0 if b0 < b1 else -1\n", ""),
    ("bitmap kernel (19.4): a claim reads a whole dirty block's bytes", "blocksim/engine/burst_kernel.py",
     "    return c == BLOCK or (c != 0 and bits[", "    return (c != 0 and bits["),
    ("journal: a snapshot of a page of data ignores logged zeros", "blocksim/model/extents.py",
     "if page.__class__ is int and page and not self._zeroing[p]:",
     "if page.__class__ is int and page:"),
    ("journal: logged writes decide zeros under data", "blocksim/model/extents.py",
     "                    if not self._base_zero(p, start, end):\n"
     "                        return j.snap(self, p, start, end)\n",
     "                    return j.snap(self, p, start, end)\n"),
    ("journal: a logged write-zeroes cannot bring zeros", "blocksim/model/extents.py",
     "                if not value:\n                    j.may_zero(self, p)\n", ""),
    ("journal: a write across pages applied before the logs", "blocksim/model/extents.py",
     "            self.settle(start, end)\n        self._set(start, end, value)",
     "            pass\n        self._set(start, end, value)"),
    ("journal: a copy-on-read fill before the logs", "blocksim/model/extents.py",
     "        runs = list(runs)\n        if runs:\n"
     "            self.settle(min(r[0] for r in runs), max(r[1] for r in runs))\n",
     "        runs = list(runs)\n"),
    ("journal: a logged paste cannot bring zeros", "blocksim/engine/journal.py",
     "        m._pending[p] = 1\n        self.may_zero(m, p)             # a paste may bring zeros\n",
     "        m._pending[p] = 1\n"),
    ("journal: zeros decided by the stored runs alone", "blocksim/model/extents.py",
     "                    j.settle(p)\n                if self._base_zero(p, start, end):",
     "                    pass\n                if self._base_zero(p, start, end):"),
    ("journal: a forgotten copy stays open", "blocksim/engine/journal.py",
     "        self._open.pop(snap.sid, None)\n        self._held.pop(snap.sid, None)",
     "        self._held.pop(snap.sid, None)"),
    ("journal: a paste after a settle names the read's old place", "blocksim/engine/journal.py",
     "        if self._logs.get(p) is snap.log:", "        if True:"),
    ("journal: copies in flight not worked out when their page settles", "blocksim/engine/journal.py",
     "        opened = [s for s in self._open.values() if s.log is log]", "        opened = []"),
    ("journal: pages rebuilt together share their first run", "blocksim/engine/journal.py",
     "                if used == lo or stored[k, s] != out_values[used - 1]:",
     "                if used == 0 or stored[k, s] != out_values[used - 1]:"),
    ("journal: a paste takes what its source holds at the end", "blocksim/engine/journal.py",
     "            while nxt < npaste and places[order[nxt]] <= j:",
     "            while nxt < npaste and j == n:"),
    ("journal: a read sees the entry logged at its own place", "blocksim/engine/journal.py",
     "            while nxt < npaste and places[order[nxt]] <= j:",
     "            while nxt < npaste and places[order[nxt]] < j:"),
    ("journal: the first write of a segment wins", "blocksim/engine/journal.py",
     "                for s in range(ia[j], ib[j]):\n                    stored[m, s] = v\n",
     "                for s in range(ia[j], ib[j]):\n"
     "                    if stored[m, s] == 0:\n                        stored[m, s] = v\n"),
    # session 11 (issue 19 item 5): the compiled settle, shared pages, the budget's count
    ("journal: a settle sorts its edges on two digits", "blocksim/engine/journal.py",
     "    for digit in range(3):", "    for digit in range(2):"),
    ("journal: an entry's end tagged as its start", "blocksim/engine/journal.py",
     "<< _TAG_BITS | (2 * j + 2)", "<< _TAG_BITS | (2 * j + 1)"),
    ("journal: a settle ignores the map's end inside its last page", "blocksim/engine/journal.py",
     "            if end > page_len:\n                end = page_len\n",
     "            end = page_len\n"),
    ("journal: pages shared where their values differ", "blocksim/engine/journal.py",
     "                    if (out_starts[lo + x] != out_starts[lo2 + x]\n"
     "                            or out_values[lo + x] != out_values[lo2 + x]):",
     "                    if out_starts[lo + x] != out_starts[lo2 + x]:"),
    ("extents: a shared page spliced in place by a write", "blocksim/model/extents.py",
     "                if page.__class__ is not tuple:     # shared: this map's own copy\n"
     "                    page = pages[p] = _own(page)\n", ""),
    ("extents: a shared page spliced in place by a copy", "blocksim/model/extents.py",
     "            if page.__class__ is not tuple:     # shared: this map's own copy\n"
     "                page = pages[p] = _own(page)\n            starts, values = page           # spliced",
     "            starts, values = page           # spliced"),
    ("journal: a settle's entries still counted against the budget", "blocksim/engine/journal.py",
     "        self.logged -= n\n", ""),
    ("kernel: a guest's ledger rows held here dropped at the next call",
     "blocksim/engine/burst_kernel.py",
     "src.writes, src.bytes_written, 0, st[L_N])", "src.writes, src.bytes_written, 0, 0)"),
    ("kernel: a guest's ledger rows kept here at its release", "blocksim/engine/burst_kernel.py",
     "        w, event = self.guest\n        self._hand_out_ledger(w)\n",
     "        w, event = self.guest\n"),
    ("kernel: a guest's ledger rows held here unannounced", "blocksim/engine/burst_kernel.py",
     "            w.drive.ledger.hold(self._hand_in_ledger)\n", "            pass\n"),
    ("clock: skip at the next event's own time", "blocksim/engine/clock.py",
     "t < self.peek()", "t <= self.peek()"),
    ("stretch: jitter does not matter", "blocksim/model/device.py",
     "        if self.jitter or self.write_threshold or self.file_write_threshold \\\n",
     "        if self.write_threshold or self.file_write_threshold \\\n"),
    ("stretch: an armed write threshold does not matter", "blocksim/model/device.py",
     "        if self.jitter or self.write_threshold or self.file_write_threshold \\\n",
     "        if self.jitter \\\n"),
    ("stretch: a busy node does not matter", "blocksim/engine/stretch.py",
     "if m < MIN_STRETCH or not node.is_idle(now):", "if m < MIN_STRETCH:"),
    ("stretch: no max in the recurrence", "blocksim/engine/stretch.py",
     "            if due > back:\n                t = due\n                waited[n] = True\n",
     "            waited[n] = due > back\n"),
    ("stretch: back at the horizon itself", "blocksim/engine/stretch.py",
     "        if t >= horizon - period or t >= end:",
     "        if t > horizon - period or t >= end:"),
    ("stretch: the workload's end ignored", "blocksim/engine/stretch.py",
     "                          NEVER if end is None else end)", "                          NEVER)"),
    ("stretch: skipped waits miscounted", "blocksim/engine/stretch.py",
     "waits = n * (2 if think else 1)", "waits = n"),
    ("stretch: clock left before the last think", "blocksim/engine/stretch.py",
     "env.skip_to(last_done + think, waits=waits)", "env.skip_to(last_done, waits=waits)"),
    ("faults: a rule on other operations counts", "blocksim/model/faults.py",
     "        return (not (self.ops & ops) or t1 <= self.t_start",
     "        return (t1 <= self.t_start"),
    ("faults: a window opening at the end counts as closed", "blocksim/model/faults.py",
     "t1 <= self.t_start", "t1 <= self.t_start + 1"),
    ("faults: dm-flakey quiet one nanosecond into its down window", "blocksim/model/faults.py",
     "(t1 - t) <= self.up", "(t1 - t) <= self.up + 1"),
    ("faults: a spent count still matters", "blocksim/model/faults.py",
     "            self.count is not None and self.fired >= self.count)",
     "            False)"),
    ("stretch: fault rules asked about the first request only", "blocksim/engine/stretch.py",
     "node.is_quiet_for(workload.operations, *workload.region, now, horizon)",
     "node.is_quiet_for(workload.operations, *workload.region, now, now + 1)"),
    ("burst: the target's rules asked about reads", "blocksim/engine/burst.py",
     "tgt.is_quiet_for(_WRITES, 0, tgt.size, now, until + 1)",
     "tgt.is_quiet_for(_READS, 0, tgt.size, now, until + 1)"),
    ("agenda: ties with SimPy's head ignored", "blocksim/engine/agenda.py",
     "                if t > head[0] or (t == head[0] and (head[1] < NORMAL or (\n"
     "                        head[1] == NORMAL and eid > head[2]))):\n"
     "                    return False\n",
     "                if t > head[0]:\n                    return False\n"),
    ("agenda: two markers under one key", "blocksim/engine/agenda.py",
     "        event = self._markers.get(key)\n", "        event = None\n"),
    ("agenda: a marker runs entries while attached", "blocksim/engine/agenda.py",
     "        if self.attached:\n            return\n        if self.runner",
     "        if self.runner"),
    ("agenda: no marker for the next entry", "blocksim/engine/agenda.py",
     "        if len(self):                   # (a runner may replace the list)\n"
     "            self._marker()\n", ""),
    # (gone since session 13: "a detached finish wakes the loop", likewise)
    ("burst: ties with SimPy's head ignored", "blocksim/engine/burst.py",
     "if t > head_t or (t == head_t and eid > last_eid):", "if t > head_t:"),
    ("burst: an URGENT head treated as NORMAL", "blocksim/engine/burst.py",
     "    return t, (eid if priority == NORMAL else -1)", "    return t, eid"),
    ("burst: pause ignored at a wake-up", "blocksim/engine/burst.py",
     "            elif job.ret or (job.pause_count > 0 and job.should_pause()) or (",
     "            elif job.ret or ("),
    ("burst: cancel ignored at a wake-up", "blocksim/engine/burst.py",
     "                elif job.ret or (job.pause_count > 0 and job.should_pause()) or (\n"
     "                        job.cancelled and not job.completes_on_cancel()):",
     "                elif job.ret or (job.pause_count > 0 and job.should_pause()):"),
    ("burst: the loop's checks made again on entry", "blocksim/engine/burst.py",
     "                if at_top:\n                    at_top = False\n                elif job.ret",
     "                if job.ret"),
    ("verb: a pause of a mirror with copies in flight is immediate", "blocksim/jobs/mirror.py",
     "        return self.in_flight == 0",
     "        return True"),
    ("verb: a job asked to pause sleeps off its rate limit first", "blocksim/jobs/base.py",
     "        if self.is_cancelled() or self.should_pause():\n            return False\n        if self._drain_pauses:",
     "        if self.is_cancelled():\n            return False\n        if self._drain_pauses:"),
    ("verb: a resume leaves the pause only when the job runs", "blocksim/jobs/base.py",
     "        self.pause_count -= 1\n        # job_resume_locked enters the job: it leaves its pause point (the\n"
     "        # status change comes before the command's reply)\n"
     "        if self.paused and not self.should_pause():\n            self._leave_pause()\n",
     "        self.pause_count -= 1\n"),
    ("verb: a pause of a sleeping job waits for the job", "blocksim/jobs/base.py",
     "        if self._sleeping and not self.paused and self.should_pause() and self.idle():\n"
     "            self._enter_pause()\n",
     ""),
    ("job: a plain cancel once ready keeps the job from pausing", "blocksim/jobs/base.py",
     "        return not (self.profile.pause_after_plain_cancel and self.completes_on_cancel())",
     "        return True"),
    ("burst: no rate limit", "blocksim/engine/burst.py",
     "            delay = job.throttle(op.counted())", "            delay = 0"),
    ("burst: SimPy's head not looked up after a failure", "blocksim/engine/burst.py",
     "            head_t, last_eid = _head(queue)\n\n", "\n\n"),
    ("burst: an overlap waits for the oldest copy, not for its holder", "blocksim/engine/burst.py",
     "                    job._awaited = job._held_by",
     "                    job._awaited = job.oldest_copy()"),
    ("burst: an exception leaves through the process", "blocksim/engine/burst.py",
     "                    agenda.raise_now(error)\n                    return WAITING",
     "                    raise"),
    ("burst: a single wait carries on past its wake-up", "blocksim/engine/burst.py",
     "            if one_wait:\n                return TOP\n", ""),
    ("burst: a verdict from before the node turned quiet ignored", "blocksim/engine/burst.py",
     "            if quiet and (op.how is None or op.how is False and op.runs is None):",
     "            if quiet:"),
    ("burst: every node quiet", "blocksim/engine/burst.py",
     "    quiet = _quiet(src, tgt, now, head_t)", "    quiet = True"),
    ("burst: a thin target counts as quiet", "blocksim/engine/burst.py",
     "            and (tgt.capacity is None\n"
     "                 or tgt.capacity >= tgt.alloc.nclusters * tgt.cluster_size)\n",
     "\n"),
    ("burst: a write-zeroes operation reads the source", "blocksim/engine/burst.py",
     "            elif op.zero:\n                delay, callback, err = op.submit_zero()",
     "            elif False:\n                delay, callback, err = op.submit_zero()"),
    # QEMU 7.2's mirror_iteration (issue 17)
    ("mirror: copies of buf-size / 16", "blocksim/jobs/mirror.py",
     "self.max_io = max(self.buf_size // MAX_IN_FLIGHT, MAX_IO_BYTES)",
     "self.max_io = max(self.buf_size // MAX_IN_FLIGHT, g)"),
    # (a cap by buf-size alone is implied: an iteration claims no more)
    ("mirror: copies not capped at granularity x IOV_MAX", "blocksim/jobs/mirror.py",
     "self.copy_max = min(self.buf_size, g * MAX_IOV)", "self.copy_max = self.buf_size"),
    ("mirror: a sleep after each operation", "blocksim/jobs/mirror.py",
     "            if self._it_bit >= self._it_end:\n                yield from self._iteration_sleep(delay)",
     "            if True:\n                yield from self._iteration_sleep(delay)"),
    ("mirror: the buffer never fills", "blocksim/jobs/mirror.py",
     "        queued = not zero and self.buf_free < n\n", "        queued = False\n"),
    ("mirror: a claim not stopped at an operation in flight", "blocksim/jobs/mirror.py",
     "        if i < len(starts) and starts[i] < b + n:\n            n = starts[i] - b\n", ""),
    ("mirror: the job's failure not checked before an operation", "blocksim/jobs/mirror.py",
     "            if self.ret:\n                self._it_end = self._it_bit", "            if False:\n                self._it_end = self._it_bit"),
    ("mirror: a full mirror walks the allocation without unmap", "blocksim/jobs/mirror.py",
     'if self.zero_target and not self.zeroes_free:', 'if False:'),
    ("mirror: no zeroing pass with unmap", "blocksim/jobs/mirror.py",
     "                yield from self._zero_target()\n", "                pass\n"),
    ("mirror: zeroes counted against the speed with unmap", "blocksim/jobs/mirror.py",
     "        return 0 if self.zero and self.job.zeroes_free else self.end - self.start",
     "        return self.end - self.start"),
    ("mirror: zero extents copied", "blocksim/jobs/mirror.py",
     "            zero = not (start % tcs or io % tcs)", "            zero = False"),
    ("mirror: zero extents capped like data", "blocksim/jobs/mirror.py",
     "        if data and io > self.max_io:", "        if io > self.max_io:"),
    ("burst: a sleep after each operation", "blocksim/engine/burst.py",
     "            if job._it_bit >= job._it_end:\n                return delay or TURN",
     "            if True:\n                return delay or TURN"),
    ("kernel: a sleep after each operation", "blocksim/engine/burst_kernel.py",
     "            if st[IT_BIT] >= st[IT_END]:\n                if not st[SLEEPS]:",
     "            if True:\n                if not st[SLEEPS]:"),
    ("kernel: the buffer never fills", "blocksim/engine/burst_kernel.py",
     "    if st[BUF_FREE] < n:\n        return -3\n", ""),
    ("kernel: a copy's granules not given back to the buffer", "blocksim/engine/burst_kernel.py",
     "        st[BUF_FREE] += ops[slot, END_BIT] - ops[slot, BIT]\n", ""),
    ("kernel: a claim not stopped at an operation in flight", "blocksim/engine/burst_kernel.py",
     "    if end > after:\n        end = after\n", ""),
    ("kernel: copies not capped by buf-size", "blocksim/engine/burst_kernel.py",
     "        if io > st[COPY_MAX]:\n            io = st[COPY_MAX]\n", ""),
    ("kernel: the job's failure not checked before a copy", "blocksim/engine/burst_kernel.py",
     "        if st[STOP_RET]:\n            st[IT_END] = b", "        if False:\n            st[IT_END] = b"),
    ("kernel: a sparse source's copies planned as data", "blocksim/engine/burst_kernel.py",
     "            if st[IT_ZERO] or not (st[IT_IO] or st[SRC_FULL]):\n                return -3\n", ""),
    ("burst: no allocation on the target", "blocksim/engine/burst.py",
     "                    if tgt._new_clusters(c0, c1):", "                    if False:"),
    # the guest run by the kernel (session 8)
    ("kernel guest: a completion at SimPy's next event skipped to", "blocksim/engine/burst_kernel.py",
     "        if not done < _peek(st, heap):", "        if done > _peek(st, heap):"),
    ("kernel guest: a due time at the next event skipped to", "blocksim/engine/burst_kernel.py",
     "    if due < _peek(st, heap):", "    if due <= _peek(st, heap):"),
    ("kernel guest: due times without the workload's start", "blocksim/engine/burst_kernel.py",
     "    due = st[G_START_AT] + np.int64(i * interval)", "    due = np.int64(i * interval)"),
    ("kernel guest: a write not marked dirty", "blocksim/engine/burst_kernel.py",
     "            st[BM_COUNT] += _mark(bits, summary, blocks, b)\n",
     "            pass\n"),
    ("kernel guest: a write's page not flagged as pending", "blocksim/engine/burst_kernel.py",
     "        loglen[p] += 2\n        pending[p] = 1\n", "        loglen[p] += 2\n"),
    ("kernel guest: a request in flight handed back as waiting for its due time",
     "blocksim/engine/burst_kernel.py",
     "        if kind == GUEST_DONE:\n            # (its ``in_flight`` already counts it)",
     "        if False:\n            # (its ``in_flight`` already counts it)"),
    ("kernel guest: another workload's request taken for the guest's", "blocksim/engine/burst_kernel.py",
     "            if w.process is None or w.process.target is not event:\n                continue\n",
     ""),
    ("kernel guest: a failed request in flight taken over as a success", "blocksim/engine/burst_kernel.py",
     "            if not (not err and node is src and how is None and length == w.bs",
     "            if not (node is src and how is None and length == w.bs"),
    ("kernel guest: the generations it drew not given back", "blocksim/engine/burst_kernel.py",
     "        w.sim.generations = count(v[G_GEN])\n", ""),
    ("kernel guest: its writes' generations taken for consecutive", "blocksim/engine/burst_kernel.py",
     "            w.drive.ledger.extend_with(self.ledger[:n, 0], w.bs, self.ledger[:n, 1])",
     "            w.drive.ledger.extend(self.ledger[:n, 0], w.bs, int(self.ledger[0, 1]))"),
    ("kernel guest: kept at a call without checking it still fits", "blocksim/engine/burst_kernel.py",
     "            if self._fits(self.guest[0], env._now, head_t, nodes_quiet=True):",
     "            if True:"),
    ("kernel guest: the workload's end not checked", "blocksim/engine/burst_kernel.py",
     "                and (w.end is None or w.end > head_t)\n", ""),
    ("kernel guest: a fault rule on its requests not checked", "blocksim/engine/burst_kernel.py",
     "                and src.is_quiet_for(w.operations, *w.region, now, head_t + 1))",
     "                and True)"),
    ("kernel guest: kept while the drive drains", "blocksim/engine/burst_kernel.py",
     "                    and not (job.should_complete or job.cancelled))):",
     "                    )):"),
    ("mirror: the ready poll's sleep with its agenda not running itself", "blocksim/jobs/mirror.py",
     "self._timer_phase = yield from self._away(self.sleep(SLICE_NS))",
     "self._timer_phase = yield from self.sleep(SLICE_NS)"),
    ("journal: a logged entry not counted in its page's log", "blocksim/engine/journal.py",
     "        self.staged = n + 1\n        self.loglen[p] += 2\n", "        self.staged = n + 1\n"),
    ("journal: a page settled without the stage handed out", "blocksim/engine/journal.py",
     "        self.flush()\n        log = self._take(p)", "        log = self._take(p)"),
    ("journal: a stretch's write not flagged as pending", "blocksim/engine/journal.py",
     "        loglen[p] += 2\n        pending[p] = 1\n", "        loglen[p] += 2\n"),
    # rate phases (issue 18): the workload's view of its phase for the shortcuts
    ("phases: a stretch runs past its phase's end", "blocksim/model/workload.py",
     "        self.end = end if self.stop_at is None else min(end, self.stop_at)",
     "        self.end = self.stop_at"),
    ("phases: the view kept when the next request starts a new phase", "blocksim/model/workload.py",
     "                if schedule is not None and self.issued >= self._view_until:",
     "                if schedule is not None and self._view_until < 0:"),
    # the other copy jobs (issue 17 item 6)
    ("burst: a target's named bitmap left unmarked by quiet copies", "blocksim/engine/burst.py",
     "            and not tgt.write_listeners\n", ""),
    ("kernel: an active commit left to the Python loop", "blocksim/engine/burst_kernel.py",
     "        return (src.content._journal is not None\n",
     "        return (src.backing is None and src.content._journal is not None\n"),
    ("audit: a chain's top holding a zero taken for the whole chain", "blocksim/model/extents.py",
     "            elif min(page[1]) == 0:\n                return False",
     "            elif False:\n                return False"),
    ("threshold: the refcount block's write before a new L2 table left out", "blocksim/model/device.py",
     "            ends.insert(0, 3 * cs)\n", "            pass\n"),
    ("threshold: a write's runs of new clusters taken as one write", "blocksim/model/device.py",
     "                    if done < new:\n", "                    if False:\n"),
    ("backup: a task over a backing chain ends where the data does, not the allocation",
     "blocksim/jobs/backup.py", "        elif src.backing is not None:\n            # bdrv_block_status_above",
     "        elif False:\n            # bdrv_block_status_above"),
    ("backup: a task on a page that may hold zeros taken for data", "blocksim/jobs/backup.py",
     "                and self._holds_data(content, first)\n", "\n"),
    ("backup: what is known of a source page kept across its changes", "blocksim/jobs/backup.py",
     "        if self._data_stamp != version or self._data_zeroed != zeroed:",
     "        if self._data_stamp is None:"),
    ("backup: a slot freed while the loop slept not seen", "blocksim/jobs/backup.py",
     "        if done.callbacks is None:\n            check(done)\n            break\n", ""),
    # (with shortcuts, the only runs with a journal, a task's write is a step:
    # BackupJob._task_written; the process _task_run runs without them)
    ("backup: a read whose write failed kept in the journal", "blocksim/jobs/backup.py",
     "        elif runs.__class__ is Snap:                # nothing will paste it\n"
     "            runs.forget()\n", ""),
    ("backup: the point-in-time check as arrays without the witness", "blocksim/jobs/backup.py",
     "        expected = pit_values[k] if witnessed else src_values[i]",
     "        expected = src_values[i]"),
    # (write_passes: a write inside one cluster, then one across clusters)
    ("backup: a guest write over a task in flight not held back", "blocksim/jobs/backup.py",
     "            return not self.bcs.is_dirty(b0) and self._in_flight(start, end) is None\n"
     "        self._witness(start, end)\n"
     "        return not self.bcs.find(b0, b1) >= 0 and self._in_flight(start, end) is None",
     "            return not self.bcs.is_dirty(b0)\n"
     "        self._witness(start, end)\n"
     "        return not self.bcs.find(b0, b1) >= 0"),
    ("backup: a guest write over dirty clusters not copied first", "blocksim/jobs/backup.py",
     "            return not self.bcs.is_dirty(b0) and self._in_flight(start, end) is None\n"
     "        self._witness(start, end)\n"
     "        return not self.bcs.find(b0, b1) >= 0 and self._in_flight(start, end) is None",
     "            return self._in_flight(start, end) is None\n"
     "        self._witness(start, end)\n"
     "        return self._in_flight(start, end) is None"),
    ("backup: a guest write over one dirty cluster not copied first", "blocksim/jobs/backup.py",
     "            return not self.bcs.is_dirty(b0) and self._in_flight", "            return self._in_flight"),
    ("backup: a guest write over dirty clusters not copied first (two or more)",
     "blocksim/jobs/backup.py",
     "        return not self.bcs.find(b0, b1) >= 0 and self._in_flight", "        return self._in_flight"),
    # (session 18: a guest write inside one cluster, write_passes' witness and
    # _copy_cluster, the block-copy call without a pass's pool)
    ("backup: a guest write's witness of its one cluster left out", "blocksim/jobs/backup.py",
     "                self._keep(start, z)\n                seen.mark(start, z)\n",
     "                seen.mark(start, z)\n"),
    ("backup: a guest's copy of one cluster not counted against the speed",
     "blocksim/jobs/backup.py",
     "                self.limit.delay(self.env._now, task.end - task.start)\n"
     "                self._steps.at(0, self._begin_step, (call, task), urgent=True)",
     "                self._steps.at(0, self._begin_step, (call, task), urgent=True)"),
    ("backup: a guest's copy of one cluster retried after its task failed",
     "blocksim/jobs/backup.py",
     "                if call.err or call.cancelled:\n                    return\n                continue\n",
     "                continue\n"),
    ("backup: a guest's copy of one cluster not waiting for the task in flight",
     "blocksim/jobs/backup.py",
     "task.pool.waited.append(task)\n            yield task.done", "task.pool.waited.append(task)\n            return"),
    ("backup: a guest's copy of one cluster started as a plain step, not urgent",
     "blocksim/jobs/backup.py",
     "                self._steps.at(0, self._begin_step, (call, task), urgent=True)\n"
     "                yield task.done",
     "                self._steps.at(0, self._begin_step, (call, task))\n"
     "                yield task.done"),
    # the copy-before-write's quiet stretches (engine/filtered.py, BackupJob.quiet_nodes,
    # copy_before_quietly) and the task steps (engine/steps.py, BackupJob._task_*)
    ("filtered: a stretch while a task is in flight", "blocksim/jobs/backup.py",
     "        if self._tasks or self.bcs is None:", "        if self.bcs is None:"),
    ("filtered: the copy's nodes not asked to be quiet", "blocksim/engine/filtered.py",
     "            and _quiet(src, tgt, now, horizon)):", "            ):"),
    ("filtered: a write that must allocate on a thin node", "blocksim/engine/filtered.py",
     "    if writes and not (node.fully_allocated() or (", "    if False and not (node.fully_allocated() or ("),
    ("filtered: the think time left out of the horizon", "blocksim/engine/filtered.py",
     "horizon) - service - think", "horizon) - service"),
    ("filtered: the write issued before its copy is done", "blocksim/engine/filtered.py",
     "            done = at + service", "            done = t + service"),
    ("filtered: a write over dirty and clean clusters copied as one task",
     "blocksim/jobs/backup.py",
     "        if n > chunk or bcs.dirty_run(b0, n) != n:", "        if n > chunk:"),
    ("filtered: a zero cluster copied as data", "blocksim/jobs/backup.py",
     "        if zero or start + num < end:\n            return None\n"
     "        return self._copy_quietly(b, b + 1,",
     "        if start + num < end:\n            return None\n"
     "        return self._copy_quietly(b, b + 1,"),
    ("filtered: no witness for a write with nothing to copy", "blocksim/jobs/backup.py",
     "            self._witness(start, end)\n            return t\n", "            return t\n"),
    ("filtered: a copy not counted against the rate limit", "blocksim/jobs/backup.py",
     "        self.limit.delay(t, nbytes)                 # (counted, not waited for)\n", ""),
    ("filtered: a copy's target clusters not allocated", "blocksim/jobs/backup.py",
     "            self._quiet_allocs.append(c0)\n", "            pass\n"),
    ("backup: a task into a next page that may hold zeros taken for data",
     "blocksim/jobs/backup.py",
     "                and (last == first or all(", "                and (True or all("),
    ("steps: a pool's wait blind to a task done while the pass slept", "blocksim/jobs/backup.py",
     "        if pooled.processed:\n            steps.succeed(ev)\n            return ev\n", ""),
    ("steps: an ended task left in the pool", "blocksim/jobs/backup.py",
     "            if task.pool is not None:\n                task.pool.ended.append(task)\n", ""),
    ("steps: a task's start not urgent", "blocksim/engine/steps.py",
     "URGENT if urgent else NORMAL", "NORMAL"),
    ("steps: ties with SimPy's head ignored", "blocksim/engine/steps.py",
     "                    if entry[2] != head[2] and entry > head:",
     "                    if entry[0] > head[0]:"),
    ("steps: a failing step raises at once", "blocksim/engine/steps.py",
     "                except BaseException as error:      # the process fails\n",
     "                except ZeroDivisionError as error:      # the process fails\n"),
    ("steps: a done event's waiters run when it succeeds", "blocksim/engine/steps.py",
     "        self.at(0, None, event)",
     "        callbacks, event.callbacks = event.callbacks, None\n"
     "        for cb in callbacks:\n            cb(event)"),
    ("steps: a failed read taken for a failed write", "blocksim/jobs/backup.py",
     "            self._task_finish(call, task, err, True)", "            self._task_finish(call, task, err, False)"),
    ("steps: a dropped write-zeroes carried out", "blocksim/jobs/backup.py",
     "complete_write_zeroes(start, min(task.end, self.size) - start, dropped)",
     "complete_write_zeroes(start, min(task.end, self.size) - start, False)"),
    # a task across pages read in pieces (backup._Pieces, BackupJob._read_for_copy)
    ("steps: a task across pages pastes its first piece only", "blocksim/jobs/backup.py",
     "                for piece in runs[1:]:\n                    content.set_runs(piece)\n",
     ""),
    ("steps: a dropped write's pieces pasted", "blocksim/jobs/backup.py",
     "            if how is None:\n                # complete_write of the first piece",
     "            if True:\n                # complete_write of the first piece"),
    ("steps: a failed write's pieces kept in the journal", "blocksim/jobs/backup.py",
     "        elif runs.__class__ is _Pieces:\n            runs.joined()\n", ""),
    # an event a step succeeds as its last action run at once (Steps.succeed(last=True))
    ("steps: an event succeeded last run at once with something due first",
     "blocksim/engine/steps.py",
     "            if self.nothing_due():\n",
     "            if True:\n"),
    ("backup: witnessed ranges cut at the edges of the slices made dense",
     "blocksim/jobs/backup.py", "    keep[1:] = b[1:] != e[:-1]\n", "    keep[1:] = True\n"),
    # (no mutation for the pool's wake-up run at once before a waiter of the
    # task, succeed(ev, True): the waiter, a guest's copy, finds its clusters
    # copied either way, and the call's next task starts past them; only
    # the order of two resumptions at one instant changes, which no test
    # could make visible)
    # issue 19 item 5, memory (mem300): one-word log entries, 4-byte values in settled pages,
    # the stage handed back
    ("journal: a ninth map's entry packed in one word", "blocksim/engine/journal.py",
     "    if ((a | b) & unit or b <= a or mi >= _C_MAPS\n", "    if ((a | b) & unit or b <= a\n"),
    ("journal: an entry off 4 KiB packed in one word", "blocksim/engine/journal.py",
     "    if ((a | b) & unit or b <= a or mi >= _C_MAPS\n", "    if (b <= a or mi >= _C_MAPS\n"),
    ("journal: a value beyond 32 bits packed in one word", "blocksim/engine/journal.py",
     "            or value < -_C_BIAS or value >= _C_BIAS):", "            or value < -_C_BIAS):"),
    ("journal: a two-word entry read with its mark", "blocksim/engine/journal.py",
     "                w0[n] = w & _WORD_MASK", "                w0[n] = w"),
    ("journal: a two-word entry counted as one in its page's words", "blocksim/engine/journal.py",
     "        counts[p] += 1 if _compact(rows[i, 1], rows[i, 2]) >= 0 else 2",
     "        counts[p] += 1"),
    ("journal: a settled page of 4-byte values read as 8-byte ones", "blocksim/model/extents.py",
     "                values[o:o + c] = np.asarray(page[1])",
     "                values[o:o + c] = np.frombuffer(page[1], dtype=np.int64)"),
    ("journal: the stage handed back with entries on it", "blocksim/engine/journal.py",
     "        # the staged entries, by page (as flush would hand them out)\n",
     "        self._scratch.madvise(mmap.MADV_DONTNEED)\n"),
    ("extents: values beyond 32 bits stored in 4 bytes", "blocksim/model/extents.py",
     "        if len(values) and 0 <= values.min() and values.max() <= _MAX_COMPACT:",
     "        if len(values) and 0 <= values.min():"),
    ("extents: a copy of 4-byte values not widened", "blocksim/model/extents.py",
     "    if seg_v.__class__ is array and seg_v.typecode != \"q\":\n"
     "        seg_v = array(\"q\", seg_v)            # (a Span from a page of 4-byte values)\n", ""),
    # the loop's sleeps run by the kernel (issue 19 item 5: one call per poll)
    ("kernel's sleeps: a ready poll's sleep where the loop does not sleep",
     "blocksim/engine/burst_kernel.py",
     "                        if st[BM_COUNT] or not st[POLL]:", "                        if st[BM_COUNT]:"),
    ("mirror's sleeps: run through cancelled", "blocksim/jobs/mirror.py",
     "        return not self.ret and not self.pause_count and not self.cancelled",
     "        return not self.ret and not self.pause_count"),
    ("mirror's sleeps: a poll's sleep before READY", "blocksim/jobs/mirror.py",
     "        return self.synced and not self.should_complete\n",
     "        return not self.should_complete\n"),
    ("mirror's sleeps: a poll's sleep when asked to complete", "blocksim/jobs/mirror.py",
     "        return self.synced and not self.should_complete\n",
     "        return self.synced\n"),
    ("kernel's sleeps: the wake-up before the entries due with the timer",
     "blocksim/engine/burst_kernel.py",
     "            if st[HEAP_N] and heap[0, T] == t:", "            if False:"),
    ("kernel's sleeps: copies finishing during a sleep wake the loop",
     "blocksim/engine/burst_kernel.py",
     "        if ops[slot, SEQ] == st[AWAITED]:\n            st[AWAITED] = -1\n",
     "        if ops[slot, SEQ] == st[AWAITED] or st[SLEEPING]:\n            st[AWAITED] = -1\n"),
    ("kernel: a paste made from Python pasted again", "blocksim/engine/burst_kernel.py",
     "        if ops[slot, MODE] == LOGGED:\n            ps = p << shift", "        if True:\n            ps = p << shift"),
    ("kernel: the reads' last run of clusters not allocated", "blocksim/engine/burst_kernel.py",
     "    if hi > lo:\n        out[m, 0] = lo\n        out[m, 1] = hi\n        m += 1\n    return m\n",
     "    return m\n"),
    # issue 19 item 4: the pool of mixed blocks' bytes, a sparse source in the kernel
    ("bitmap (19.4): a reused slot keeps its stale bytes", "blocksim/model/bitmap.py",
     "        a = slot << BLOCK_SHIFT\n        pool[a:a + BLOCK] = fill\n",
     "        a = slot << BLOCK_SHIFT\n        if not head:\n            pool[a:a + BLOCK] = fill\n"),
    ("bitmap (19.4): a block all dirty keeps its slot", "blocksim/model/bitmap.py",
     "            if c == BLOCK:                  # all dirty: no bytes\n"
     "                self._free_slot(slot)\n                slot = 0\n", ""),
    ("bitmap (19.4): a slot given back twice", "blocksim/model/bitmap.py",
     "        if slot and (new == 0 or new == BLOCK):", "        if new == 0 or new == BLOCK:"),
    ("bitmap (19.4): whole blocks set over mixed ones keep their slots", "blocksim/model/bitmap.py",
     "            for slot in (entries[entries > COUNT_MASK] >> COUNT_BITS).tolist():\n"
     "                self._free_slot(slot)\n", ""),
    ("bitmap kernel (19.4): a reused slot keeps its stale bytes", "blocksim/engine/bitmap_blocks.py",
     "        _put32(bits, 0, _get32(bits, slot << BLOCK_SHIFT))\n    else:\n"
     "        slot = _get32(bits, 4)\n        _put32(bits, 4, slot + 1)\n"
     "    for j in range(slot << BLOCK_SHIFT, (slot + 1) << BLOCK_SHIFT):\n        bits[j] = fill\n",
     "        _put32(bits, 0, _get32(bits, slot << BLOCK_SHIFT))\n    else:\n"
     "        slot = _get32(bits, 4)\n        _put32(bits, 4, slot + 1)\n"
     "        for j in range(slot << BLOCK_SHIFT, (slot + 1) << BLOCK_SHIFT):\n            bits[j] = fill\n"),
    ("bitmap kernel (19.4): a claim clearing a mixed block keeps its slot", "blocksim/engine/burst_kernel.py",
     "            if slot:\n                _free_slot(bits, slot)\n            summary[blk] = 0\n",
     "            summary[blk] = 0\n"),
    ("bitmap kernel (19.4): the search in a slot at the block's own place", "blocksim/engine/burst_kernel.py",
     "    a = (blk - (v >> COUNT_BITS)) << BLOCK_SHIFT        # granule -> pool offset\n"
     "    found = _find(bits, bit_words, b0 - a, b1 - a)",
     "    a = 0\n    found = _find(bits, bit_words, b0 - a, b1 - a)"),
    ("sparse (19.4): claims planned as data on any source", "blocksim/engine/burst_kernel.py",
     "        return src.fully_allocated() or (job.dirty_allocated and src.backing is None)",
     "        return True"),
    ("sparse (19.4): every page of a source over a backing file read here",
     "blocksim/engine/burst_kernel.py",
     "        if src.backing is None:\n            if self.stamp is not _EVERY_PAGE:",
     "        if True:\n            if self.stamp is not _EVERY_PAGE:"),
    ("sparse (19.4): granules across clusters taken for allocated", "blocksim/jobs/mirror.py",
     "                                    and src.cluster_size % self.granularity == 0)", ")"),
    ("sparse (19.4): a failure dirtying an unallocated range keeps the claims data",
     "blocksim/jobs/mirror.py",
     "            self.dirty_allocated = False\n            self._marked_unallocated = True\n",
     "            pass\n"),
    ("sparse (19.4): the guest's writes in the kernel allocate nothing", "blocksim/engine/burst_kernel.py",
     "        src.allocate_writes(offsets, int(self.st[G_BS]))\n", ""),
    ("sparse (19.4): the guest's write in flight not allocated at a return",
     "blocksim/engine/burst_kernel.py",
     "v[G_OFF] if v[G_KIND] == GUEST_DONE and not v[G_READ] else -1", "-1"),
    ("sparse (19.4): a guest on a source that may run out of room run in the kernel",
     "blocksim/engine/burst_kernel.py",
     "                and (src.capacity is None\n"
     "                     or src.capacity >= src.alloc.nclusters * src.cluster_size))",
     ")"),
    ("sparse (19.4): a cluster listed in a sparse page allocated again", "blocksim/model/allocation.py",
     "        new = (b - a) - (hi - lo)\n", "        new = b - a\n"),
    # the loop waits for its oldest copy in flight (QEMU's
    # mirror_wait_for_free_in_flight_slot), in each of its three restatements
    ("mirror: the loop woken by the newest copy, not the oldest", "blocksim/jobs/mirror.py",
     "        return next(iter(self._copies))",
     "        return next(reversed(self._copies))"),
    ("burst: the loop woken by the newest copy at 16 in flight", "blocksim/engine/burst.py",
     "                waiting = True\n                job._awaited = job.oldest_copy()",
     "                waiting = True\n                job._awaited = max(job._copies)"),
    ("kernel: the loop woken by the newest copy", "blocksim/engine/burst_kernel.py",
     "        if ops[s, USED] and (seq < 0 or ops[s, SEQ] < seq):",
     "        if ops[s, USED] and (seq < 0 or ops[s, SEQ] > seq):"),
    ("kernel: an overlap waits for the oldest copy, not for its holder",
     "blocksim/engine/burst_kernel.py",
     "        st[AWAITED] = last_seq          # (the loop waits for that one)",
     "        st[AWAITED] = _oldest_copy(ops)"),
    # the background pass's loop (engine/copyloop.py): what it restates of the
    # steps (engine/steps.py) and of BackupJob's pass and task steps
    ("copyloop: a task's done run at once with a SimPy event due at that instant",
     "blocksim/engine/copyloop.py",
     "                heappop(heap)\n                at_once = ((not heap or heap[0][0] > now)\n"
     "                           and (not queue or queue[0][0] > now) and (rt is None or rt[0] > now))\n"
     "                wakes = waiting",
     "                heappop(heap)\n                at_once = ((not heap or heap[0][0] > now)\n"
     "                           and True and (rt is None or rt[0] > now))\n"
     "                wakes = waiting"),
    ("copyloop: ties with SimPy's head ignored", "blocksim/engine/copyloop.py",
     "                if entry[2] != head[2] and entry > head:",
     "                if entry[2] != head[2] and entry[0] > head[0]:"),
    ("copyloop: the rate limiter's sleep not foreseen", "blocksim/engine/copyloop.py",
     "                if dispatched >= quota:\n                    return False",
     "                if False:\n                    return False"),
    ("copyloop: a task whose block status is not data throughout made", "blocksim/engine/copyloop.py",
     "            if zero or a + num < e:\n                return False",
     "            if False:\n                return False"),
    ("copyloop: a task made at a wake-up not counted by the limiter", "blocksim/engine/copyloop.py",
     "                dispatched = limit.dispatched = limit.dispatched + e - a\n"
     "                if dispatched >= limit.slice_quota:\n"
     "                    limit.slice_end = limit.slice_start + int(",
     "                dispatched = limit.dispatched = limit.dispatched + 0\n"
     "                if dispatched >= limit.slice_quota:\n"
     "                    limit.slice_end = limit.slice_start + int("),
    ("copyloop: a task made in the pool's fill not counted by the limiter", "blocksim/engine/copyrows.py",
     "            lim[2] += batch[k, 1] - batch[k, 0]", "            lim[2] += 0"),
    ("copyloop: the pool's fill makes a task whose block status is not data throughout",
     "blocksim/engine/copyloop.py",
     "            if zero or a + num < e:\n                break\n            batch = np.array(",
     "            if False:\n                break\n            batch = np.array("),
    ("copyloop: the pool's fill takes no task past the one that waits for a slot",
     "blocksim/engine/copyloop.py",
     "        k = copyrows.admit(batch, made, n, lim, now, quota, speed, room + 1 - n, q)",
     "        k = copyrows.admit(batch, made, n, lim, now, quota, speed, room + 2 - n, q)"),
    ("copyloop: the fill's limiter asks for no sleep when the slice's quota is spent",
     "blocksim/engine/copyrows.py",
     "            elif lim[2] >= quota:\n                break", "            elif False:\n                break"),
    ("copyloop: a write-zeroes task's start taken for a read's", "blocksim/engine/copyloop.py",
     "                if task.zero:\n                    break\n", ""),
    ("copyloop: a write still to come pastes nothing", "blocksim/engine/copyloop.py",
     "        heap[i] = entry[:4] + ((call, task, 0, arg[3], runs),)", "        pass"),
    ("copyloop: the tasks' clusters left dirty in the bitmap", "blocksim/engine/copyloop.py",
     "                bcs.clear_bits(first, plan[taken - 1][1] // cs)", "                pass"),
    ("copyloop: the target's clusters not allocated", "blocksim/engine/copyloop.py",
     "            _allocate(tgt.alloc, allocs[:nalloc])\n            _leave(", "            _leave("),
    ("copyloop: the writes' content not pasted", "blocksim/engine/copyloop.py",
     "    if len(pastes):\n        job._paste_runs(pastes)",
     "    if len(pastes):\n        job._paste_runs(pastes[1:] if len(pastes) > 1\n"
     "                        else np.zeros((1, 2), dtype=np.int64))"),
    ("copyloop: the pass's wake-up from a done step taken without its check",
     "blocksim/engine/copyloop.py",
     "                    if wakes and at_once and not feasible(len(ended), now):",
     "                    if False:"),
    # the pass's own tasks as rows, their steps compiled (engine/copyrows.py):
    # what step() restates of copyloop.run, and the rows made entries again
    ("copyrows: a row's step taken before SimPy's head", "blocksim/engine/copyrows.py",
     "        if _less(st[Q_T], st[Q_P], st[Q_ID], t, p, i):\n            return BOUND",
     "        if False:\n            return BOUND"),
    ("copyrows: the rate limiter's sleep not foreseen", "blocksim/engine/copyrows.py",
     "            if dispatched >= quota:\n                return 0",
     "            if False:\n                return 0"),
    ("copyrows: a task made at a wake-up not counted by the limiter", "blocksim/engine/copyrows.py",
     "            st[DISPATCHED] += e - a", "            st[DISPATCHED] += 0"),
    ("copyrows: a row's write made an entry again without its read", "blocksim/engine/copyrows.py",
     "            return (t, p, i, job._write_step, (call, task, 0, None, runs))",
     "            return (t, p, i, job._write_step, (call, task, 0, None, []))"),
    ("copyrows: the rows' writes not counted", "blocksim/engine/copyrows.py",
     "            st[N_WRITES] += 1\n", ""),
    ("copyrows: the waiting task's row not given back when the pass takes it",
     "blocksim/engine/copyrows.py",
     "        self.release(s)\n        self.tslot = -1\n        return task",
     "        self.tslot = -1\n        return task"),
    ("copyrows: the source's queue not taken back from the rows", "blocksim/engine/copyloop.py",
     "        rows.ring_out(src, copyrows.S_H, v)\n", ""),
    # the pass's tasks only as rows (session 17): no object while the
    # compiled steps hold them, the job's list and the pool's Python's only
    ("copyrows: a task in flight among the rows not found by a guest's write",
     "blocksim/engine/copyrows.py",
     "        return None if s < 0 else self.obj(s)", "        return None"),
    ("copyrows: not the newest task in flight among the rows (QEMU's reqlist order)",
     "blocksim/engine/copyrows.py",
     "                and seq[s] > after):",
     "                and (best < 0 or seq[s] < seq[best]) and seq[s] > after):"),
    # the copy loop's entries cheap (session 18): the plan kept across
    # entries, the steps' markers dropped by the compiled steps, the runs
    # kept in their arrays
    ("copyloop: a plan kept across a change of the copy bitmap", "blocksim/engine/copyloop.py",
     "        if kept[2] != version or kept[3] is not known:",
     "        if kept[3] is not known:"),
    ("bitmap: a change of the dirty granules not counted in its version",
     "blocksim/model/bitmap.py",
     "        self._count = value\n        self.version += 1\n", "        self._count = value\n"),
    ("backup_kernel: a kept plan's row taken again at another end",
     "blocksim/engine/backup_kernel.py",
     "        if a != plan[k, 0] or e != plan[k, 1]:", "        if a != plan[k, 0]:"),
    ("copyrows: SimPy's next event dropped as a marker of the steps",
     "blocksim/engine/copyrows.py",
     "        while st[Q_MARK] and _less(st[Q_T], st[Q_P], st[Q_ID], t, p, i):",
     "        while st[QI] < 8 and _less(st[Q_T], st[Q_P], st[Q_ID], t, p, i):"),
    ("copyrows: the runs' arrays grown without their rows", "blocksim/engine/copyrows.py",
     "        self.pastes = np.concatenate((self.pastes, np.zeros_like(self.pastes)))",
     "        self.pastes = np.zeros((2 * len(self.pastes), 2), dtype=np.int64)"),
    # QEMU's reqlist is newest first (reqlist_init_req, QLIST_INSERT_HEAD):
    # a block-copy call waits for the newest task it overlaps
    ("backup: a block-copy call waits for the oldest task in flight it overlaps",
     "blocksim/jobs/backup.py",
     "            if task.start < end and start < task.end and (found is None\n"
     "                                                          or task.seq > found.seq):\n"
     "                found = task\n",
     "            if task.start < end and start < task.end:\n"
     "                found = task\n"
     "                break\n"),
    ("copyrows: a row in flight not seen by the stretches (quiet_nodes)",
     "blocksim/jobs/backup.py",
     "        if self._rows is not None and self._rows.busy():", "        if False:"),
    ("copyrows: a row's object in the pool without its pool's check",
     "blocksim/engine/copyrows.py",
     "            task.done.callbacks.append(partial(job._pool_check, task))\n", ""),
    ("copyrows: the pass's wait for all its tasks without the rows'", "blocksim/jobs/backup.py",
     "        pool = (rows.pool_tasks() if rows is not None and rows.pooled is pooled\n"
     "                else pooled.tasks)",
     "        pool = pooled.tasks"),
    ("copyloop: the rows' ended tasks not counted in the pool", "blocksim/engine/copyloop.py",
     "        pooled.ended_rows = v[N_ENDED] - len(ended)", "        pooled.ended_rows = 0"),
    ("journal: a compiled paste's entry naming the wrong place of the read (copy_runs)",
     "blocksim/engine/journal.py",
     "            rows[staged, 2] = -1 - (((loglen[p] >> 1) << _MAP_BITS | src) << 1)",
     "            rows[staged, 2] = -1 - (((loglen[p] >> 1) << _MAP_BITS | src) << 1) - 2"),
    ("backup: the limiter's sleep before the pass's next task taken with nothing left to copy",
     "blocksim/jobs/backup.py",
     "            if self.bcs.find(pos // cs, -(-end // cs)) >= 0:\n                ns = self.limit",
     "            if True:\n                ns = self.limit"),
    ("backup: the rows' ended tasks left in the pool", "blocksim/jobs/backup.py",
     "        pooled.count -= len(pooled.ended) + pooled.ended_rows",
     "        pooled.count -= len(pooled.ended)"),
    ("backup: one cluster's stretch copy on a page that may hold zeros", "blocksim/jobs/backup.py",
     "        if (p != (end - 1) >> content._shift or not self._holds_data(content, p)):",
     "        if (p != (end - 1) >> content._shift):"),
    ("backup: one cluster's stretch copy without its witness", "blocksim/jobs/backup.py",
     "        seen = self._seen\n        if not seen.is_dirty(b):                    # _witness\n",
     "        seen = self._seen\n        if False:                    # _witness\n"),
    ("filtered: a zero range of clusters copied as data", "blocksim/jobs/backup.py",
     "        if zero or start + num < end:\n            return None\n"
     "        return self._copy_quietly(b0, b1,",
     "        if start + num < end:\n            return None\n"
     "        return self._copy_quietly(b0, b1,"),
    ("filtered: a range's copy's target clusters not allocated", "blocksim/jobs/backup.py",
     "        if tgt._new_clusters(c0, c1):\n            tgt.alloc.set_range(c0, c1)\n"
     "        tgt._service_done(read_done, size)\n",
     "        tgt._service_done(read_done, size)\n"),
    ("alloc (19.4): a sparse segment's tail not moved up for an insertion", "blocksim/model/allocation.py",
     "            else:                           # its tail moved up, in place\n"
     "                for k in range(off + n - 1, hi - 1, -1):\n"
     "                    sparse[k + new] = sparse[k]\n",
     "            else:\n                pass\n"),
    ("alloc (19.4): a page turning to bytes loses its listed clusters", "blocksim/model/allocation.py",
     "            dense[base + sparse[k]] = 1\n", "            pass\n"),
    ("alloc (19.4): a batch resumed past the cluster it stopped at", "blocksim/model/allocation.py",
     "        if r < 0:\n            return k, new\n", "        if r < 0:\n            return k + 1, new\n"),
    ("alloc (19.4): a full page keeps its byte slot", "blocksim/model/allocation.py",
     "        _free_dense(state, dense, -1 - loc)\n", "        pass\n"),
    ("journal (19.4): a bulk settle's entries still counted against the budget",
     "blocksim/engine/journal.py",
     "        self.logged -= n                # (as _take: the budget counts what is logged)\n", ""),
    # (a page left flagged pending or zeroing is only settled again for
    # nothing: no rule, so no mutation; its log's length is one)
    ("journal (19.4): a bulk settle leaves its pages' log lengths", "blocksim/engine/journal.py",
     "        n = int((loglen[pages] >> 1).sum())\n        loglen[pages] = 0\n",
     "        n = int((loglen[pages] >> 1).sum())\n"),
    ("bitmap (19.4): a mark of one granule leaves its group's byte clear", "blocksim/model/bitmap.py",
     "                self.blocks[blk] = 1\n                self.granules[self._groups + (blk >> GROUP_SHIFT)] = 1\n",
     "                self.blocks[blk] = 1\n"),
    ("bitmap (19.4): a range's mark leaves its group's byte clear", "blocksim/model/bitmap.py",
     "            self.blocks[blk] = 1\n            self.granules[self._groups + (blk >> GROUP_SHIFT)] = 1\n",
     "            self.blocks[blk] = 1\n"),
    ("bitmap (19.4): whole blocks marked leave their groups' bytes clear", "blocksim/model/bitmap.py",
     "                self.granules[g0:g1] = b\"\\x01\" * (g1 - g0)\n", "                pass\n"),
    ("bitmap kernel (19.4): the guest's mark leaves its group's byte clear",
     "blocksim/engine/bitmap_blocks.py",
     "        bits[_groups_at(summary) + (blk >> GROUP_SHIFT)] = 1\n", ""),
    ("bitmap kernel (19.4): a group's byte cleared after a search of part of it",
     "blocksim/engine/bitmap_blocks.py",
     "        whole = hi <= stop or stop == nblocks\n", "        whole = True\n"),
    ("alloc (19.4): a segment given back left off its free list", "blocksim/model/allocation.py",
     "    state[_SEGMENTS_FREE + cb] = off + 1\n", ""),
    ("alloc (19.4): segments moved together past a page's listed clusters",
     "blocksim/model/allocation.py",
     "        for k in range(meta[2 * p + 1]):\n            sparse[to + k] = sparse[off + k]\n",
     "        for k in range(meta[2 * p + 1] - 1):\n            sparse[to + k] = sparse[off + k]\n"),
    ("bitmap kernel (19.4): the search gives up at a group with no block flagged",
     "blocksim/engine/bitmap_blocks.py",
     "        if whole:\n            bits[at + g] = 0\n        g += 1\n",
     "        if whole:\n            bits[at + g] = 0\n        return -1\n"),
    ("job held: a stream or completed commit lets go of its nodes at concluded",
     "blocksim/jobs/base.py",
     "        return self.status != \"concluded\" or self.keeps_nodes_when_concluded()",
     "        return self.status != \"concluded\""),
    ("job held: an intermediate commit's drive stays a root node", "blocksim/jobs/base.py",
     "            if ((other._filtered is node or other._main_node is node)",
     "            if ((other._filtered is node)"),
    ("job cancel: a cancel of a paused job keeps its io-status", "blocksim/jobs/base.py",
     "            self.iostatus.reset()\n            self.user_paused = False",
     "            self.user_paused = False"),
    ("job cancel: a cancelled job shows no error", "blocksim/jobs/base.py",
     "        elif self.cancel_error is not None:\n            info[\"error\"] = self.cancel_error\n",
     ""),
    # QEMU 7.2's main loop (session 14): blkdebug fails on the next turn, the
    # mirror sleeps 0 ns after each iteration, copies wait for their buffer
    # out of flight
    ("faults: a blkdebug error after the device's latency", "blocksim/model/faults.py",
     "        verdict.errno = self.errno\n        verdict.next_turn = True\n",
     "        verdict.errno = self.errno\n"),
    ("mirror: copies waiting for the buffer hold the loop", "blocksim/jobs/mirror.py",
     "        queued = not zero and self.buf_free < n\n",
     "        if not zero and self.buf_free < n:\n            return None\n        queued = False\n"),
    ("mirror: a sleep of 0 ns from a completion", "blocksim/jobs/mirror.py",
     "        if delay or self._timer_phase:", "        if True:"),
    ("mirror: no sleep of 0 ns from the timers", "blocksim/jobs/mirror.py",
     "        if delay or self._timer_phase:", "        if delay:"),
    ("kernel: a sleep of 0 ns from a completion", "blocksim/engine/burst_kernel.py",
     "                if delay or st[TIMER_PHASE]:", "                if True:"),
    ("kernel: no sleep of 0 ns from the timers", "blocksim/engine/burst_kernel.py",
     "                if delay or st[TIMER_PHASE]:", "                if delay:"),
    ("kernel: the timers' phase kept at a completion's wake-up", "blocksim/engine/burst_kernel.py",
     "            st[TIMER_PHASE] = 0             # (woken by a completion)\n", ""),
    ("burst: the timers' phase kept at a completion's wake-up", "blocksim/engine/burst.py",
     "            job._timer_phase = False        # (by a completion)\n", ""),
    ("mirror: a queued copy in flight after the copies started while it waited",
     "blocksim/jobs/mirror.py",
     "                self._copies = dict(sorted(copies.items()))", "                pass"),
    # the compiled copy-before-write stretches (engine/backup_kernel.py, restating
    # BackupJob._copy_one_quietly and filtered.advance) and the pastes at once
    # (ContentJournal.copy, BackupJob._paste, BackupJob.quiet_end)
    ("backup_kernel: a due time waited for before the workload's end not counted",
     "blocksim/engine/backup_kernel.py",
     "            st[WAITED] += waits             # (counted before the stop)\n"
     "            return STOP", "            return STOP"),
    ("backup_kernel: a copied cluster left dirty in the copy bitmap",
     "blocksim/engine/backup_kernel.py",
     "st[CLEARED] += _clear(bcs_bits, bcs_summary, bcs_blocks, b)",
     "st[CLEARED] += 0 * _clear(bcs_bits, bcs_summary, bcs_blocks, b)"),
    ("backup_kernel: a copy without its witness", "blocksim/engine/backup_kernel.py",
     "                if not _is_dirty(seen_bits, seen_summary, b):     # _witness\n"
     "                    _copy(",
     "                if False:     # _witness\n                    _copy("),
    ("backup_kernel: a copy not counted against the rate limit", "blocksim/engine/backup_kernel.py",
     "                    st[DISPATCHED] += cs\n", "                    st[DISPATCHED] += 0\n"),
    ("backup_kernel: a read placed after the entries logged since", "blocksim/engine/backup_kernel.py",
     "-1 - ((((loglen[p] >> 1) << _MAP_BITS) | src) << 1)",
     "-1 - (((((loglen[p] >> 1) + 1) << _MAP_BITS) | src) << 1)"),
    ("backup_kernel: no room left on the stage", "blocksim/engine/backup_kernel.py",
     "                if known[p] != 2 or st[STAGED] + 2 > capacity:",
     "                if known[p] != 2 or st[STAGED] + 2 > capacity + 2:"),
    ("backup_kernel: the target's clusters not allocated", "blocksim/engine/backup_kernel.py",
     "            alloc.set_ranges(allocs[:int(st[ALLOCS])])", "            pass"),
    ("backup_kernel: a write-through deadline ignored", "blocksim/engine/backup_kernel.py",
     "                if write_done >= deadline:", "                if write_done > deadline + 10**6:"),
    ("journal: a copy's read taken from the map it pastes into", "blocksim/engine/journal.py",
     "((self.loglen[p] >> 1) << _MAP_BITS | src._tag >> _MAP_SHIFT)",
     "((self.loglen[p] >> 1) << _MAP_BITS | dst._tag >> _MAP_SHIFT)"),
    ("filtered: a stretch's copies' allocation not handed in", "blocksim/engine/filtered.py",
     "    write_filter.quiet_end()\n", ""),
    ("backup: the copy loop's paste of a page of data made into another map",
     "blocksim/jobs/backup.py",
     "            k, a = journal.copy_runs(source, content, runs, self._known_view(source), k, a)",
     "            k, a = journal.copy_runs(source, self._pit, runs, self._known_view(source), k, a)"),
    ("backup: the copy loop's paste of a page first asked made into another map",
     "blocksim/jobs/backup.py",
     "            journal.copy(source, content, p, a, b)\n        else:",
     "            journal.copy(source, self._pit, p, a, b)\n        else:"),
    ("backup_kernel: a planned task over a page not known to hold data",
     "blocksim/engine/backup_kernel.py",
     "            if known[p] != 2:\n                out[k, 0] = a",
     "            if known[p] == 1:\n                out[k, 0] = a"),
    ("backup_kernel: a planned run not cut at a clean granule", "blocksim/engine/backup_kernel.py",
     "            clean = _find_in(bits, v, blk, 0, b, edge)", "            clean = -1"),
    ("copyloop: a task the compiled search hands back made without its status",
     "blocksim/engine/copyloop.py",
     "                    planner.known()\n                    if zero or a + num < e:\n"
     "                        return False\n",
     "                    planner.known()\n"),
    # issue 19 item 4 (the sparse hour): a settle's pages in bulk, settle_all
    # in one merge, flushes kept as chunks
    ("bulk: a page in bulk read from the dict", "blocksim/model/extents.py",
     "        if b is not None and b.flags[p]:\n            self._unbulk_one(p)\n"
     "        return self._dict.get(p, self._base)",
     "        return self._dict.get(p, self._base)"),
    ("bulk: a page stored in bulk keeps its old page object", "blocksim/model/extents.py",
     "            for p in pages[_stored_in(store, pages)].tolist():\n                del store[p]\n",
     "            pass\n"),
    ("bulk: a settle reads the bulk's pages as holding the default", "blocksim/model/extents.py",
     "            _move_rows(b.lo[at[inb]], counts[inb], first[inb], b.starts, b.values,\n"
     "                       starts, values)",
     "            counts[inb] = 1"),
    ("bulk: grown arrays keep the old rows' places", "blocksim/model/extents.py",
     "            self.lo[pages] = to\n", ""),
    ("bulk: whole pages cleared stay in the bulk", "blocksim/model/extents.py",
     "                b.flags_np[at] = 0\n                if not b.count:", "                if not b.count:"),
    ("bulk: extent_count counts a page of zeros", "blocksim/model/extents.py",
     "int(np.count_nonzero(b.values[b.lo[at[one]]]))", "int(one.sum())"),
    ("bulk: run_arrays stops at the range's end after max_runs", "blocksim/model/extents.py",
     "        stop = min((int(at[len(counts) - 1]) + 1) << shift, end)\n", ""),
    ("bulk: settle_all merges the pages of copies in flight", "blocksim/engine/journal.py",
     "        odd = {s.start >> shift for s in self._open.values()}", "        odd = set()"),
    ("bulk: settle_all puts a page's staged entries first", "blocksim/engine/journal.py",
     "        streams.append((spages, sstarts, sends, words))\n",
     "        streams.insert(0, (spages, sstarts, sends, words))\n"),
    ("bulk: settle_all leaves its pages' log lengths", "blocksim/engine/journal.py",
     "            # (as _take_many: the pages' counts and flags cleared)\n            loglen[pages] = 0\n",
     "            # (as _take_many: the pages' counts and flags cleared)\n"),
    ("bulk: a page in bulk of 4-byte values read as 8-byte ones", "blocksim/model/extents.py",
     'SharedPage((starts, array("I", b.values[lo:lo + n].tobytes())))',
     'SharedPage((starts, array("q", b.values[lo:lo + n].tobytes())))'),
    ("bulk: chunks pulled again", "blocksim/engine/journal.py",
     "            hit &= since <= seq\n", ""),
    ("bulk: a flush hands out before the page's chunks", "blocksim/engine/journal.py",
     "        self._pull(pages)               # (their entries in chunks come first)\n", ""),
    ("bulk: a page settled with its chunks' entries left out", "blocksim/engine/journal.py",
     "        if self._chunks:\n            self._pull(np.array([p], dtype=np.int64))\n", ""),
    ("bulk: an insertion sort of edges compares their tags", "blocksim/engine/journal.py",
     "            key = v >> _TAG_BITS\n", "            key = v\n"),
    ("bulk: a page's pastes in reverse order of their places", "blocksim/engine/journal.py",
     "while x > 0 and places[order[x - 1]] > places[q]:",
     "while x > 0 and places[order[x - 1]] < places[q]:"),
    # session 15 (issue 17 item 6): a task's start run where it is made
    # (copyloop.resume, copyloop._start), the pass's planner kept, a
    # stretch's page asked for the kernel
    ("copyloop: a start run at once on nodes that are not quiet (the fill)",
     "blocksim/engine/copyloop.py",
     "                   and not src.faults and not tgt.faults\n"
     "                   and _quiet(src, tgt, now, queue[0][0] if queue else float(\"inf\")))\n"
     "        if at_once and KERNEL:",
     "                   )\n        if at_once and KERNEL:"),
    ("copyloop: a start run at once as a read's for a write-zeroes task (a wake-up)",
     "blocksim/engine/copyloop.py",
     "                    if (not task.zero and (not heap or heap[0] > key)",
     "                    if (True and (not heap or heap[0] > key)"),
    ("backup: a stretch's page not asked yet not asked (learn_page)", "blocksim/jobs/backup.py",
     "        self._holds_data(content, p)\n        return True\n",
     "        return True\n"),
    # session 16 (issue 17 item 6): the backup hour outside its copy loop
    ("backup: a stretch's pages not asked ahead (learn_pages)", "blocksim/jobs/backup.py",
     "        for p in pages:\n            self._holds_data(content, p)\n        return len(pages)\n",
     "        return len(pages)\n"),
    ("filtered: a stretch's reach for its pages stopping at the hand-back",
     "blocksim/engine/filtered.py",
     "    return max(n, min(m, last + 1))", "    return n"),
    ("backup: the witness pasted at once over two pages", "blocksim/jobs/backup.py",
     "            if p == (z - 1) >> content._shift and self._holds_data(content, p):",
     "            if self._holds_data(content, p):"),
    ("backup_kernel: the copies' clusters set one by one where a copy spans several",
     "blocksim/engine/backup_kernel.py",
     "            if tgt.cluster_size == cs:", "            if True:"),
    ("backup: the check's segment past a witnessed range's end", "blocksim/jobs/backup.py",
     "                if seen_ends[w] < edge:\n                    edge = seen_ends[w]\n", ""),
    ("backup: the witnessed ranges' all-dirty block opening no run", "blocksim/jobs/backup.py",
     "        elif v == BLOCK:\n            if run < 0:\n                run = base\n",
     "        elif v == BLOCK:\n            pass\n"),
    ("backup: the witnessed ranges' rows overrun unsaid", "blocksim/jobs/backup.py",
     "    if n == starts.shape[0]:\n        return -1\n", ""),
    ("ledger: a short extend's offset off the blocks taken as a block", "blocksim/model/ledger.py",
     "        if o < 0 or q * unit != o or q > 0xFFFFFFFF:",
     "        if o < 0 or q > 0xFFFFFFFF:"),
    ("ledger: a short extend's generations all the first", "blocksim/model/ledger.py",
     "        gens[i] = first_gen + i", "        gens[i] = first_gen"),
    ("ledger: a short extend's block past a compact column taken", "blocksim/model/ledger.py",
     "        if o < 0 or q * unit != o or q > 0xFFFFFFFF:",
     "        if o < 0 or q * unit != o:"),
    # session 17 (issue 17 item 6): a write a backup's filter lets pass
    # without a wait may skip its node's wait; the ledger's keys sorted by
    # their digits
    ("clock: a write whose copy-before-write waited skips its node's wait",
     "blocksim/model/drive.py",
     "                        err = yield from filters[0].copy_before_write(offset, length)\n"
     "                        shared_wake = True\n",
     "                        err = yield from filters[0].copy_before_write(offset, length)\n"),
    ("ledger: the radix sort's buckets left unsorted below the first digit",
     "blocksim/model/ledger.py", "        if shift > 0:\n", "        if shift > _RADIX_BITS:\n"),
    ("ledger: the radix sort's insertion stops short of a bucket's first key",
     "blocksim/model/ledger.py", "        while j > lo and x[j - 1] > v:",
     "        while j > lo + 1 and x[j - 1] > v:"),
    ("extents: the audit's walk takes a run starting at a block's start for the one before",
     "blocksim/model/extents.py", "        while r + 1 < m and rs[r + 1] <= s[i]:",
     "        while r + 1 < m and rs[r + 1] < s[i]:"),
    ("extents: the audit's walk's piece not clipped to its block's start",
     "blocksim/model/extents.py", "                    a = rs[q] if rs[q] > s[i] else s[i]",
     "                    a = rs[q]"),
    ("extents: the audit's walk stops at a block's first run",
     "blocksim/model/extents.py", "            if q >= m or rs[q] >= e[i]:",
     "            if True:"),
    ("ledger: the keys made without their ledger index", "blocksim/model/ledger.py",
     "        keys[i] = ((np.int64(offsets[i]) // unit) << shift) | i",
     "        keys[i] = (np.int64(offsets[i]) // unit) << shift"),
    ("ledger: the radix sort's highest differing bit one too low",
     "blocksim/model/ledger.py", "    while (differ >> bits) > 0:", "    while (differ >> bits) > 1:"),
    # session 15 (issue 19 item 4): the search's eight words at a time (the
    # prefetches change nothing: no rule, no mutation)
    ("bitmap kernel: the search's eight-word step skips a word it did not test",
     "blocksim/engine/bitmap_blocks.py",
     "| words[w + 4] | words[w + 5] | words[w + 6] | words[w + 7]):",
     "| words[w + 4] | words[w + 5] | words[w + 6]):"),
    ("clock: a write its filter broke returns as if resumed by its own event",
     "blocksim/model/drive.py",
     "            self.woken_shared = shared_wake\n",
     "            self.woken_shared = False\n"),
    ("clock: a worker skips to its due time after a write its filter broke",
     "blocksim/model/workload.py",
     "if due > env.now and (shared or not env.skip_to(due)):",
     "if due > env.now and not env.skip_to(due):"),
    ("clock: a worker skips its think time after a write its filter broke",
     "blocksim/model/workload.py",
     "if self.think and (shared or not env.skip_to(env.now + self.think)):",
     "if self.think and not env.skip_to(env.now + self.think):"),
    # session 17 (the guest side on a QEMU VM): the STOP of a guest's stop
    # error is announced once the completions of that moment are done, by a
    # zero-delay event the clock's skips must not jump over
    ("vm: a guest's stop error announces STOP at once, before that moment's other errors",
     "blocksim/model/policy.py",
     'self.vm.stop("io-error", announce_later=self.profile.io_error_stop_requested)',
     'self.vm.stop("io-error")'),
    # the background pass's rate-limit sleeps and wake-ups (session 18: BackupJob._sleep_over)
    ('sleeps: a wake-up resumed at once with something due at its instant',
     'blocksim/jobs/backup.py',
     '        if self._steps is None or not SLEEPS or not self._next_now():',
     '        if self._steps is None or not SLEEPS:'),
    ('sleeps: a wake-up of a failed call not resumed',
     'blocksim/jobs/backup.py',
     '        if (pooled is None or pooled.call is not call or call.err or call.cancelled',
     '        if (pooled is None or pooled.call is not call or call.cancelled'),
    ('sleeps: a wake-up with nothing dirty left not resumed',
     'blocksim/jobs/backup.py',
     '        if self.bcs.find(pooled.pos // cs, -(-pooled.end // cs)) < 0:\n            return 0\n        return self.limit.delay(now, 0)',
     '        return self.limit.delay(now, 0)'),
    ('sleeps: a sleep re-armed without the id of the task not made',
     'blocksim/jobs/backup.py',
     '            next(env._eid)\n            env.timeout(ns).callbacks.append(partial(self._sleep_over, call, ev))',
     '            env.timeout(ns).callbacks.append(partial(self._sleep_over, call, ev))'),
    ('sleeps: a wake-up re-armed when the limiter would start a new slice',
     'blocksim/model/ratelimit.py',
     '        if not self.speed or self.slice_end <= now or self.dispatched < self.slice_quota:\n            return 0\n        slice_end',
     '        if not self.speed or self.dispatched < self.slice_quota:\n            return 0\n        slice_end'),
    ('sleeps: a wait for a slot over at once with something due at its instant',
     'blocksim/jobs/backup.py',
     '                    if woke and pooled.processed and self._next_now():',
     '                    if woke and pooled.processed:'),
    ('sleeps: a wait for a slot over at once after any resumption',
     'blocksim/jobs/backup.py',
     '                    if woke and pooled.processed and self._next_now():',
     '                    if pooled.processed and self._next_now():'),
    ('sleeps: a wait for a slot over at once without its id',
     'blocksim/jobs/backup.py',
     '                        pooled.wait += 1\n                        next(env._eid)\n',
     '                        pooled.wait += 1\n'),
    ("sleeps: a fill past a wait over at once without the wait's id",
     'blocksim/engine/copyloop.py',
     '            pooled.wait += 1\n            next(env._eid)\n            job._unpool(pooled)\n',
     '            pooled.wait += 1\n            job._unpool(pooled)\n'),
    ('sleeps: a fill past a wait for a slot with something due at its instant',
     'blocksim/engine/copyloop.py',
     '        if n > room == 0 and woke and pooled.processed and job._next_now():',
     '        if n > room == 0 and woke and pooled.processed:'),
    ('sleeps: a fill past a wait for a slot after any resumption',
     'blocksim/engine/copyloop.py',
     '        if n > room == 0 and woke and pooled.processed and job._next_now():',
     '        if n > room == 0 and pooled.processed and job._next_now():'),
    ("clock: peek sees SimPy's queue only, not the running steps' next entry",
     'blocksim/engine/clock.py',
     '        if steps is not None and steps.heap:',
     '        if False:'),
    ('steps: the running steps not told to the clock',
     'blocksim/engine/steps.py',
     '        env.running_steps = self\n',
     '        env.running_steps = None\n'),
]


def _tests(copy: Path, timeout: float | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
        cwd=copy, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(copy)})


def _touch_dependents(copy: Path, path: str) -> None:
    """Numba's cache notices a change to a compiled function's own file
    only (it keeps a hash of that file): a compiled function elsewhere that
    calls one of the mutated file's (blocksim.engine.bitmap_blocks'
    helpers) keeps it in its cached machine code.  The numba caches of the
    files that import the mutated module are deleted, so they are compiled
    again."""
    stem = Path(path).stem
    for other in (copy / "blocksim").rglob("*.py"):
        if other != copy / path and any(
                line.lstrip().startswith(("from ", "import ")) and re.search(rf"\b{stem}\b", line)
                for line in other.read_text().splitlines()):
            for cached in other.parent.glob(f"__pycache__/{other.stem}.*.nb[ic]"):
                cached.unlink()


def run(selected: list) -> int:
    bad = 0
    with tempfile.TemporaryDirectory(prefix="blocksim-mutations-") as scratch:
        copy = Path(scratch) / "project"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
            ".git", ".venv", "results", "__pycache__", "*.egg-info", ".pytest_cache"))
        # the unmutated copy must pass, or every mutation would look caught
        # (with no time limit: on a loaded machine it can take longer than
        # TIMEOUT, and a mutation's run is given three times what it took)
        started = time.monotonic()
        baseline = _tests(copy, None)
        timeout = max(TIMEOUT, 3 * (time.monotonic() - started))
        if baseline.returncode != 0:
            print(baseline.stdout[-2000:], baseline.stderr[-2000:])
            raise SystemExit("the shortcut tests fail without any mutation")
        for name, path, text, replacement in selected:
            target = copy / path
            original = target.read_text()
            if original.count(text) != 1:
                print(f"STALE     {name}")
                bad += 1
                continue
            target.write_text(original.replace(text, replacement))
            _touch_dependents(copy, path)
            try:
                proc = _tests(copy, timeout)
                caught = proc.returncode != 0
                lines = proc.stdout.strip().splitlines()
                detail = lines[-1] if lines else proc.stderr.strip()[-120:]
            except subprocess.TimeoutExpired:
                caught, detail = True, f"hung for {timeout:.0f} s"
            finally:
                target.write_text(original)
                _touch_dependents(copy, path)
            print(f"{'caught   ' if caught else 'SURVIVED '} {name}  ({detail})", flush=True)
            bad += not caught
    return bad


def main(argv: list[str]) -> int:
    pattern = argv[1] if len(argv) > 1 else ""
    selected = [m for m in MUTATIONS if pattern in m[0]]
    bad = run(selected)
    print(f"{len(selected) - bad}/{len(selected)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
