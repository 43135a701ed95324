"""Every notebook in notebooks/ runs top to bottom with small parameters.

The cell tagged ``parameters`` gets ``SMALL = True`` (and ``SEEDS = 2`` when
it defines SEEDS) appended, the notebook is executed with nbclient in a
``python3`` kernel that runs this interpreter, with the working directory
set to a temporary folder, and any cell error fails the test.
"""

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMALL = {"SMALL": "True", "SEEDS": "2"}
PROBE = "import os, sys\nprint(repr((sys.prefix, os.getcwd())))"


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return cells[0]


def make_small(nb) -> None:
    cell = parameters_cell(nb)
    lines = [f"{name} = {value}" for name, value in SMALL.items()
             if re.search(rf"^{name}\s*=", cell.source, re.MULTILINE)]
    assert lines, "the parameters cell should define SMALL"
    cell.source += "\n# injected by tests/analysis/test_notebooks.py\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def kernel_for_this_python(tmp_path_factory, monkeypatch_module):
    """A ``python3`` kernel spec that runs ``sys.executable``, found first."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (blocksim tests)", "language": "python"}))
    monkeypatch_module.setenv("JUPYTER_PATH", str(root))
    return "python3"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"thin-mirror-target-policy.ipynb", "mirror-convergence.ipynb",
            "one-run-walkthrough.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_small_and_states_its_conclusions(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    parameters_cell(nb)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any("Conclusion" in m for m in markdown), "no markdown cell with the conclusions"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            assert not any(k.startswith("image/") for k in data), "images stored in the notebook"
    assert path.stat().st_size < 200_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_small_parameters(path, tmp_path, kernel_for_this_python):
    nb = nbformat.read(path, as_version=4)
    make_small(nb)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, kernel_name=kernel_for_this_python, timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                     # raises CellExecutionError on any cell error
    probe = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    prefix, cwd = eval(probe)            # noqa: S307 - our own repr
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()     # this venv's python
    assert Path(cwd).resolve() == tmp_path.resolve()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
