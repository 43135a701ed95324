"""``blocksim serve``: a scenario's simulated QEMU that management code talks QMP to.

A front end, above the analysis and qemu layers and below the command line:

- ``protocol.py``: QMP's wire format as QEMU 7.2 speaks it (framing by
  JSON tokens, the greeting, request checks, QEMU's limits and errors);
- ``session.py``: the run, advanced in steps (virtual time) and its record;
- ``commands.py``: QMP commands with QEMU's argument names and errors, on
  the management Monitor and the model;
- ``server.py``: the socket loop (unix socket 0600 or TCP, one client at a
  time, virtual or real time);
- ``cli.py``: the ``blocksim serve`` command.

Imports: any layer below (simulation, management, record, scenario, jobs,
model; the engine only through ``blocksim.engine``).  Only ``blocksim.cli``
imports it.
"""
