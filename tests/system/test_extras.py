"""The core install does not pull dask: it is the [dask] extra, imported only
by a sweep on a cluster, and a missing one is named (issue 20)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from blocksim.analysis import sweep as sweep_mod
from blocksim.analysis.sweep import SweepError

ROOT = Path(__file__).resolve().parents[2]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_dask_is_an_extra_not_a_dependency():
    project = pyproject()
    assert not any(dep.startswith(("dask", "distributed")) for dep in project["dependencies"])
    assert project["optional-dependencies"]["dask"] == ["dask[distributed]>=2024.1"]
    assert "qemu" in project["optional-dependencies"]
    install = next(line for line in (ROOT / "Makefile").read_text().splitlines()
                   if "pip install" in line and "-e" in line)
    assert "dask" in install and "html" in install and "test" in install


def test_import_and_the_command_line_do_not_import_dask():
    code = ("import sys, blocksim, blocksim.cli\n"
            "from click.testing import CliRunner\n"
            "CliRunner().invoke(blocksim.cli.main, ['sweep', '--help'])\n"
            "CliRunner().invoke(blocksim.cli.main, ['validate', 'scenarios/mirror-cancel-when-ready.toml'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout


def test_a_cluster_sweep_without_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)       # import fails
    with pytest.raises(SweepError, match=r"pip install 'blocksim\[dask\]'"):
        sweep_mod._execute_dask([], lambda record: None, "tcp://127.0.0.1:1")
