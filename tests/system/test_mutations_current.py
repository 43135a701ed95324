"""The mutation list (tests/mutations.py) stays in step with the code.

Running the mutations takes a long time, so it is not part of the suite; but a
mutation whose text no longer occurs exactly once in its file is *stale*: it
checks nothing until someone updates it.  Code changes (and merges of
branches that each changed one side) leave stale mutations behind silently;
this cheap check names them at once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _mutations():
    spec = importlib.util.spec_from_file_location("blocksim_mutations", ROOT / "tests" / "mutations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutation_matches_its_code_exactly_once():
    mutations = _mutations()
    stale = [(name, path, (ROOT / path).read_text().count(text))
             for name, path, text, _replacement in mutations.MUTATIONS
             if (ROOT / path).read_text().count(text) != 1]
    assert not stale, "stale mutations (name, file, occurrences): " + repr(stale)


def test_mutation_names_are_unique_and_change_something():
    mutations = _mutations()
    names = [m[0] for m in mutations.MUTATIONS]
    assert len(names) == len(set(names))
    assert all(text != replacement for _n, _p, text, replacement in mutations.MUTATIONS)
    assert all((ROOT / test).exists() for test in mutations.TESTS)
