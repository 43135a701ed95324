"""Errors of the QEMU cross-check, all :class:`~blocksim.errors.BlocksimError`.

Each says what failed in the user's terms (which binary, which socket, which
command, how long we waited), so the command line can print one clean line.
"""

from __future__ import annotations

from ..errors import BlocksimError


class QemuError(BlocksimError):
    """Base class of the errors of :mod:`blocksim.qemu`."""


class QemuNotFoundError(QemuError):
    """A QEMU binary (qemu-img, qemu-io, qemu-storage-daemon) is missing."""


class QemuToolError(QemuError):
    """qemu-img or qemu-io failed; the message carries its stderr."""


class DaemonError(QemuError):
    """qemu-storage-daemon did not start, or died."""


class QMPError(QemuError):
    """Base class of QMP client errors."""


class QMPConnectError(QMPError):
    """The QMP socket could not be reached, or the server closed it."""


class QMPProtocolError(QMPError):
    """The server sent something that is not QMP (bad JSON, no greeting...)."""


class QMPTimeoutError(QMPError):
    """The server did not answer in time (a hung daemon)."""


class QMPCommandError(QMPError):
    """A command was refused: QMP's ``{"error": {"class", "desc"}}``."""

    def __init__(self, command: str, error_class: str, desc: str):
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP command '{command}' failed: {error_class}: {desc}")
