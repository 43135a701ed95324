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


LLVM_RESIDENT = """
import sys, numpy as np
from blocksim.model.bitmap import DirtyBitmap
from blocksim.engine import journal


def llvm_kib():
    kib, mine = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split(" ", 1)[0]
        if not head.endswith(":"):
            mine = "libllvmlite" in line
        elif mine and head == "Rss:":
            kib += int(line.split()[1])
    return kib


bm = DirtyBitmap(1 << 20, 65536)
bm.mark_writes(np.array([0, 200000], dtype=np.int64), 4096)
first = llvm_kib()
x = np.array([5, 3, 9, 1], dtype=np.int64) << journal._TAG_BITS
journal._sort_offsets(x, 4, np.empty(4, dtype=np.int64), np.empty(journal._RADIX + 1, dtype=np.int64))
print(bm.count, (x >> journal._TAG_BITS).tolist(), first // 1024, llvm_kib() // 1024)
"""


def test_llvm_pages_are_handed_back_after_loading_compiled_code():
    """Loading numba's target context and the first cached functions
    touches some 65 MiB of libllvmlite.so (code and read-only data) that
    would stay resident; after each compilation or cache load those pages
    are handed back (``compiled.shed_compiler_pages``), and compiled code
    of another module loaded after that still runs."""
    if not Path("/proc/self/smaps").exists():
        return
    proc = subprocess.run([sys.executable, "-c", LLVM_RESIDENT], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.stdout.split()[0] == "2"
    assert "[1, 3, 5, 9]" in proc.stdout
    first_mib, second_mib = map(int, proc.stdout.split("]")[1].split())
    assert first_mib < 8 and second_mib < 8, proc.stdout


def test_a_compiled_function_imported_from_another_module_is_its_dispatcher():
    # bitmap.py's compiled marks call bitmap_blocks' _mark, imported by name:
    # loading bitmap.py's functions loads bitmap_blocks' and puts the
    # dispatcher under the imported name (numba could not call the stub)
    import numpy as np
    from blocksim.engine import bitmap_blocks, compiled
    from blocksim.model import bitmap
    bm = bitmap.DirtyBitmap(1 << 20, 65536)
    bm.mark_writes(np.array([0, 200000], dtype=np.int64), 4096)
    assert bm.count == 2
    assert bitmap._mark is bitmap_blocks._mark
    assert not isinstance(bitmap._mark, compiled._Stub)
