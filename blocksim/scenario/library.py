"""The scenario library that travels with the package, and the templates of
``blocksim new``.

The library is the repository's ``scenarios/`` folder, shipped as package
data (``blocksim/library`` links to it), so ``blocksim list`` and ``blocksim
run NAME`` work from any directory after ``pip install``.  A scenario is
named by its file's stem: ``mirror-thin-target-enospc`` is
``library/mirror-thin-target-enospc.toml``; ``qemu/NAME`` names one of the
qemu-check cases.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["library_dir", "library_names", "find_in_library", "templates", "template_text"]


def library_dir() -> Path:
    """Where the installed library's scenario files are."""
    return Path(str(files("blocksim") / "library"))


def library_names() -> list[str]:
    """The names of the library's scenarios (not the qemu-check cases), sorted."""
    return sorted(p.stem for p in library_dir().glob("*.toml"))


def find_in_library(name: str) -> Path | None:
    """The library file a bare NAME (or ``qemu/NAME``) stands for, if any."""
    if not name or name.endswith(".toml") or name.startswith((".", "/")) or "\\" in name:
        return None
    parts = name.split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "qemu") or not parts[-1]:
        return None
    path = library_dir().joinpath(*parts[:-1], parts[-1] + ".toml")
    return path if path.is_file() else None


def _templates_dir() -> Path:
    return Path(str(files("blocksim") / "scenario" / "templates"))


def templates() -> list[str]:
    """The names ``blocksim new`` takes, sorted."""
    return sorted(p.stem for p in _templates_dir().glob("*.toml"))


def template_text(name: str) -> str | None:
    """The commented TOML of template ``name``, or None if there is none."""
    path = _templates_dir() / f"{name}.toml"
    return path.read_text() if name in templates() else None
