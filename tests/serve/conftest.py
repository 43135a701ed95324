"""A ``blocksim serve`` process per test, on a unix socket in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_qemu_qmp() -> None:
    """Import the qemu.qmp library although tests/qemu (a test package named
    ``qemu``, on sys.path through tests/) shadows its namespace package: import
    it with tests/ off the path, keep its ``qemu.qmp*`` modules, and leave
    ``qemu`` itself to the test package."""
    try:
        import qemu.qmp.legacy  # noqa: F401
        return
    except ImportError:
        pass
    shadow = {k: sys.modules.pop(k) for k in list(sys.modules)
              if k == "qemu" or k.startswith("qemu.")}
    saved = sys.path[:]
    tests = (ROOT / "tests").resolve()
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != tests]
    try:
        import qemu.qmp.legacy  # noqa: F401
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        sys.modules.pop("qemu", None)
        for name, module in shadow.items():
            sys.modules.setdefault(name, module)


_load_qemu_qmp()
SCENARIO = ROOT / "examples" / "serve" / "mirror-flaky-target.toml"


class Served:
    def __init__(self, proc, socket: Path, out: Path):
        self.proc, self.socket, self.out = proc, socket, out

    @property
    def results(self) -> Path:
        return self.out / "mirror-flaky-target-served"

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)


def start_server(tmp_path: Path, *args: str, scenario: Path = SCENARIO) -> Served:
    socket = tmp_path / "qmp.sock"
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "blocksim", "serve", str(scenario),
                             "--socket", str(socket), "--out", str(out), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.communicate()}")
        time.sleep(0.05)
    return Served(proc, socket, out)


@pytest.fixture
def served(tmp_path):
    server = start_server(tmp_path)
    yield server
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(30)
