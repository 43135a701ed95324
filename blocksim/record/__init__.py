"""The record: what a run leaves behind, observed, never steering.

- ``eventlog.py``: QMP-shaped events in simulated time (read first).
- ``probes.py``: sampled time series (queue depths, latencies, job progress,
  thin usage).
- ``invariants.py``: checks every run makes (legal job transitions, sticky
  io-status, no acknowledged guest write lost).
- ``summary.py``: outcomes per job, drive, image and VM as plain data.
- ``result.py``: a run's events, commands, series and summary together.
- ``results.py``, ``atomic.py``: results folders, written atomically.
- ``plot.py``: the timeline figure.

Imports: the model (to audit what devices hold), ``blocksim.errors``; never
the scenario, management or anything above.  The model hands the record
what it emits; switching a probe on or off changes no event.
"""
