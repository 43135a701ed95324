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
    """A hidden name next to ``path`` (``.NAME.tmp-PID-XXXXXXXX``: the
    process that writes it, so that :func:`remove_leftovers` can tell a
    dead writer's leftover from a live one's work in progress)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


#: A leftover of the older spelling, without the writer's PID, is removed
#: once it is this old (seconds): no write takes that long.
_OLD_SPELLING_AGE = 3600


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` (files or folders) that a
    killed writer left: those whose process is gone (:func:`temporary_sibling`).
    Returns what was removed.  Best effort: what cannot be removed stays."""
    import shutil
    import time
    path = Path(path)
    removed = []
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        kind, sep, rest = entry.name[len(prefix):].partition("-")
        if kind not in ("tmp", "old") or not sep:
            continue
        pid, sep, token = rest.partition("-")
        if sep and pid.isdigit() and len(token) == 8:
            if _alive(int(pid)):
                continue
        elif len(rest) == 8:            # .NAME.tmp-XXXXXXXX: no PID to ask
            try:
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < _OLD_SPELLING_AGE:
                    continue
            except OSError:
                continue
        else:
            continue
        leftover = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError:
            continue
        removed.append(leftover)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                     # someone else's process
    except OSError:
        return True
    return True


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
    remove_leftovers(path)              # what an earlier, killed write left
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
