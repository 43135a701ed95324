"""Check blocksim's model against real QEMU (qemu-storage-daemon, no guest;
and a VM with a tiny guest for the guest's error policies).

- :mod:`.qmp_client`: a small QMP client over a UNIX socket;
- :mod:`.daemon`: start and stop qemu-storage-daemon, never leaving a process;
- :mod:`.translate`: scenario -> what QEMU can run, and what is skipped and why;
- :mod:`.check`: run both sides and compare;
- :mod:`.report`: the side-by-side report;
- :mod:`.vm`: a qemu-system-x86_64 VM whose busybox guest does O_DIRECT I/O;
- :mod:`.vmcheck`: ``qemu-check --vm``: a scenario's guest side on that VM
  and on blocksim, compared;
- :mod:`.cli`: the ``blocksim qemu-check`` command;
- :mod:`.export`: ``blocksim export``: the scenario as a qemu-storage-daemon
  session or as libvirt ``<disk>`` elements (the command is ``blocksim/cli/export.py``).

See ``docs/qemu-check.md``.
"""

from .check import ScenarioCheck, check_scenario, check_scenarios, find_tools  # noqa: F401
from .errors import DaemonError, QemuError, QemuNotFoundError, QemuToolError, QMPCommandError, QMPConnectError, QMPError, QMPProtocolError, QMPTimeoutError
from .translate import translate  # noqa: F401

__all__ = ["ScenarioCheck", "check_scenario", "check_scenarios", "find_tools", "translate",
           "QemuError", "QemuNotFoundError", "QemuToolError", "DaemonError", "QMPError",
           "QMPCommandError", "QMPConnectError", "QMPProtocolError", "QMPTimeoutError"]
