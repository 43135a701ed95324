"""Writing files so that an interrupted write never looks complete.

Every output of blocksim (results folders, sweep tables, figures, baseline
records) goes through here: a file is written to a hidden temporary sibling,
flushed to disk and renamed over its final name, so a reader sees either the
old file or the whole new one, never half of it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """A hidden name next to ``path`` (``.NAME.tmp-XXXXXXXX``)."""
    return path.with_name(f".{path.name}.{kind}-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_synced(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and flush it to disk (for a file inside a
    folder that is itself renamed into place when complete)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to produce the file, then rename it over ``path``."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path, text: str) -> Path:
    # atomic_write flushes the file to disk: no need for write_synced's fsync too
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
