"""The model: what QEMU's block layer does, one concept per module.

This is the layer a QEMU developer reads.  Each module says which QEMU code
it models; the rules are checked against real QEMU by qemu-check.

- ``device.py``: a block device node (raw or qcow2 image): content, cluster
  allocation (``allocation.py``, ``extents.py``), backing file, thin
  capacity, service time and its fault rules (``faults.py``).
- ``policy.py``: the one error-policy engine; drives and jobs both ask it what
  a failed request does (report, ignore, stop, enospc, auto) and it emits
  BLOCK_IO_ERROR / BLOCK_JOB_ERROR.  ``iostatus.py``: io-status, sticky or
  ranked.  ``profile.py``: today's QEMU or the 2012 design note, as flags.
- ``vm.py`` (run state, stop/drain/cont), ``drive.py`` (guest requests with
  rerror/werror), ``workload.py`` (fio-like guests), ``ledger.py`` (every
  write acknowledged to the guest, audited at the end).
- ``bitmap.py`` (dirty bitmap) and ``ratelimit.py`` (a job's ``speed``): what
  block jobs build on; ``named_bitmap.py``: the named dirty bitmaps of
  ``block-dirty-bitmap-add`` on a node, and their QMP commands.
- ``thin.py``: thin volumes' pools (volume groups) and their extends, with
  seeded latencies; a device's write thresholds and the qcow2 file's
  physical layout are in ``device.py``.

Imports: ``blocksim.errors`` and the engine, through ``blocksim.engine``
only (a device's content lives in the engine's journal; a guest's quiet
stretch runs there).  Never the jobs or anything above.
"""
