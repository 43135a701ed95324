"""Management: what a management layer (libvirt, vdsm) sends to QEMU.

- ``monitor.py``: the QMP-like commands a run accepts (``stop``, ``cont``,
  ``block-job-*``, ``job-*``, ``thin-extend``, ``guest-burst``), each
  answered as QMP answers (a return or a refusal with QEMU's error class and
  wording) and recorded.
- ``transaction.py``: ``transaction``, several commands all or nothing
  (libvirt's backup with its checkpoint).
- ``actions.py``: when the scenario sends them: at a time, or in reaction to
  an event (``on`` / ``match``), after a delay.
- ``controller.py``: the interface of management controllers, policies that
  decide by themselves (one scenario section each); ``thin_provisioning.py``:
  vdsm's thin-provisioning loop (write thresholds, extends, ENOSPC then cont).

Imports: the record (the event log it reacts to), the scenario (its
settings), jobs, model and ``blocksim.errors``; never the run assembly or the front ends.
"""
