"""The console examples of README.md and docs/*.md, regenerated from the code.

An example is a command in an HTML comment followed by a code block holding
what it prints::

    <!-- example: blocksim run scenarios/mirror-thin-target-enospc.toml -->
    ```text
    mirror-thin-target-enospc: profile qemu, seed 5, ...
    ```

or a figure, the timeline a scenario's run draws, above the image that shows it::

    <!-- figure: scenarios/mirror-thin-target-enospc.toml -->
    ![timeline of mirror-thin-target-enospc](docs/images/timeline-mirror-thin-target-enospc.png)

or a console session, its commands after ``$`` (a trailing ``\\`` continues one)
and what each prints below it::

    <!-- example -->
    ```console
    $ blocksim run scenarios/mirror-thin-target-enospc.toml --out results/before
    $ blocksim compare results/before results/before
    ...
    ```

    python docs/examples.py            # check: list every example whose output moved, exit 1
    python docs/examples.py --update   # rewrite the blocks with what the commands print now

Each command runs through the shell in a scratch folder where ``scenarios``
and ``docs`` lead to the repository's, so the paths it prints are the ones a user in a
clone sees; stdout and stderr are kept in order.  A command prefixed with
``!`` may exit non-zero (an example of an error), as may the commands of a
session (``blocksim compare`` exits 1 when something changed).  tests/system/
test_docs_examples.py runs the check, so an example cannot drift from the
code.

A figure is compared byte for byte with a fresh run's ``timeline.png`` (runs
and figures are deterministic) when the committed image was drawn by the
matplotlib version installed; an image drawn by another version (its PNG
``Software`` text says which) cannot be compared, as rasterisation may differ
between versions, and is listed as not checked instead of failing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"<!-- example: (?P<command>.+?) -->\n```(?P<lang>\w*)\n(?P<output>.*?)```",
                     re.S)
SESSION = re.compile(r"<!-- example -->\n```console\n(?P<body>.*?)```", re.S)
FIGURE = re.compile(r"<!-- figure: (?P<scenario>\S+) -->\n!\[[^\]]*\]\((?P<image>[^)]+)\)")


def commands(body: str) -> list[str]:
    """The commands of a console session (``$`` lines, with continuations)."""
    out, lines = [], body.splitlines()
    k = 0
    while k < len(lines):
        if lines[k].startswith("$ "):
            command = [lines[k][2:]]
            while command[-1].endswith("\\") and k + 1 < len(lines):
                k += 1
                command.append(lines[k])
            out.append("\n".join(command))
        k += 1
    return out


def documents() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def run(command: str, scratch: Path, may_fail: bool = False) -> str:
    """What ``command`` prints, from ``scratch``."""
    may_fail = may_fail or command.startswith("!")
    command = command.lstrip("! ")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "COLUMNS": "100", "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, shell=True, cwd=scratch, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if done.returncode and not may_fail:
        raise RuntimeError(f"example {command!r} exited {done.returncode}:\n{done.stdout}")
    return done.stdout


def drawn_by(png: bytes) -> str | None:
    """The ``Software`` text of a PNG (matplotlib writes its version there)."""
    key = b"tEXtSoftware\x00"
    at = png.find(key)
    if at < 0:
        return None
    length = int.from_bytes(png[at - 4:at], "big")
    return png[at + len(key):at + 4 + length].decode("latin-1")


def figure(scenario: str, scratch: Path) -> bytes:
    """The timeline figure a run of ``scenario`` draws."""
    out = scratch / "figure-runs"
    run(f"blocksim run {scenario} --out {out} --quiet", scratch)
    (png,) = out.glob("*/timeline.png")
    data = png.read_bytes()
    png.unlink()
    return data


def figures(update: bool, doc: Path, text: str, scratch: Path, moved: list[str],
            unchecked: list[str]) -> None:
    import matplotlib
    ours = f"Matplotlib version{matplotlib.__version__}"
    for match in FIGURE.finditer(text):
        image = ROOT / match["image"]
        old = image.read_bytes() if image.exists() else b""
        if old and not (drawn_by(old) or "").startswith(ours + ",") and not update:
            unchecked.append(f"{doc.name}: {match['image']} (drawn by {drawn_by(old)}, "
                             f"running {ours})")
            continue
        new = figure(match["scenario"], scratch)
        if new != old:
            moved.append(f"{doc.name}: figure {match['image']}")
            if update:
                image.parent.mkdir(parents=True, exist_ok=True)
                image.write_bytes(new)


def examples(update: bool = False, docs: list[Path] | None = None,
             unchecked: list[str] | None = None) -> list[str]:
    """Check (or rewrite) every example of ``docs`` (default: README.md and
    docs/*.md); the ``file: command`` of each that moved."""
    moved = []
    with tempfile.TemporaryDirectory(prefix="blocksim-examples-") as tmp:
        scratch = Path(tmp)
        (scratch / "scenarios").symlink_to(ROOT / "scenarios")
        (scratch / "docs").symlink_to(ROOT / "docs")      # docs/typos.toml, a bad file
        for doc in docs or documents():
            text = doc.read_text()

            def replace(match: re.Match) -> str:
                printed = run(match["command"], scratch)
                if printed != match["output"]:
                    moved.append(f"{doc.name}: {match['command']}")
                return (f"<!-- example: {match['command']} -->\n```{match['lang']}\n"
                        f"{printed}```")

            def replay(match: re.Match) -> str:
                body = "".join("$ " + command + "\n" + run(command.replace("\\\n", " "), scratch, True)
                               for command in commands(match["body"]))
                if body != match["body"]:
                    moved.append(f"{doc.name}: session "
                                 f"{commands(match['body'])[0].splitlines()[0]}")
                return f"<!-- example -->\n```console\n{body}```"

            new = SESSION.sub(replay, EXAMPLE.sub(replace, text))
            figures(update, doc, text, scratch, moved, [] if unchecked is None else unchecked)
            if update and new != text:
                doc.write_text(new)
    return moved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the blocks that moved")
    args = parser.parse_args(argv)
    unchecked: list[str] = []
    moved = examples(update=args.update, unchecked=unchecked)
    for line in moved:
        print(("updated " if args.update else "moved   ") + line)
    for line in unchecked:
        print("not checked " + line)
    if not moved:
        print("every example is up to date")
    return 1 if moved and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
