"""numba is loaded only when a run reaches compiled code (issue 19 item 5):
``import blocksim``, ``blocksim --help`` and ``blocksim validate`` leave it
out; a mirror run that uses the compiled copy loop brings it in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import runpy, sys
argv = sys.argv[1:]
if argv:
    sys.argv = ["blocksim", *argv]
    try:
        runpy.run_module("blocksim", run_name="__main__")
    except SystemExit as e:
        assert not e.code, e.code
else:
    import blocksim
print(sorted(m for m in ("numba", "llvmlite", "scipy") if m in sys.modules))
"""


def _loaded(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-c", CHECK, *argv], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    return proc.stdout.strip().splitlines()[-1]


def test_import_does_not_load_numba():
    assert _loaded() == "[]"


def test_help_and_validate_do_not_load_numba():
    assert _loaded("--help") == "[]"
    assert _loaded("validate", "scenarios/mirror-cancel-when-ready.toml") == "[]"


def test_a_compiled_function_loads_numba_on_first_call():
    code = ("import sys, numpy as np\n"
            "from blocksim.engine import stretch\n"
            "assert 'numba' not in sys.modules\n"
            "from blocksim.model.bitmap import DirtyBitmap\n"
            "bm = DirtyBitmap(1 << 20, 65536)\n"
            "bm.mark_writes(np.array([0, 200000], dtype=np.int64), 4096)\n"
            "print('numba' in sys.modules, bm.count)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.stdout.split() == ["True", "2"]
