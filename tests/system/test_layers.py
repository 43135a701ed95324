"""The package's layers: imports point one way, and there is no import cycle.

blocksim is laid out in layers (see each subpackage's ``__init__``), from the
bottom up::

    errors                  the exception tree every layer raises from
    engine                  the clock and the exact shortcuts
    model                   devices, faults, the error-policy engine, VM, drives, guests
    jobs                    the block-job life cycle and one module per job type
    record                  event log, probes, summary, invariants, results, figures
    scenario                the input format, its validation and overrides
    management              QMP-like commands and event-driven actions
    simulation              the run assembly (may use every layer below it)
    analysis                sweeps, regression comparisons, notebook helpers
    explore                 search fault schedules for broken properties, shrink them
    qemu                    qemu-check: the same scenario on real QEMU
    serve                   blocksim serve: the simulation over QMP (a front end)
    cli                     the command line
    blocksim (the root)     the public API

A module may import its own layer and the layers below it, never one above.
Layers above the engine reach it only through ``blocksim.engine`` itself (the
seam its ``__init__`` documents), not through its modules.  Every import in
the source counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "blocksim"

LAYERS = ["errors", "engine", "model", "jobs", "record", "scenario", "management",
          "simulation", "analysis", "explore", "qemu", "serve", "cli",
          ""]
RANK = {name: rank for rank, name in enumerate(LAYERS)}
RANK["__main__"] = RANK[""]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(module: str, named: bool = False) -> list[tuple[int, str]]:
    """(line, imported blocksim module) for every import in ``module``'s
    source; ``from package import name`` counts as importing the submodule
    ``name`` when there is one, else the package.  ``named``: the module the
    statement names instead (``package`` there)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "blocksim"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "blocksim":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES and not named else target))
    return found


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in MODULES} <= set(RANK), sorted({layer(m) for m in MODULES} - set(RANK))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_higher_layer(module):
    upward = [f"line {line}: {target} ({layer(target) or 'the root'})"
              for line, target in imports(module)
              if RANK[layer(target)] > RANK[layer(module)]]
    assert not upward, f"{module} ({layer(module) or 'the root'}) imports from above: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) != "engine"))
def test_the_engine_is_reached_only_through_its_seam(module):
    inside = [f"line {line}: {target}" for line, target in imports(module, named=True)
              if layer(target) == "engine" and target != "blocksim.engine"]
    assert not inside, f"{module} reaches into the engine's modules: {inside}"


def test_no_import_cycle():
    graph = {m: {t for _, t in imports(m) if t != m} for m in MODULES}
    # Tarjan's strongly connected components, iteratively
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop(); on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_see_the_imports_they_judge():
    # the walk must see imports inside functions and resolve relative ones,
    # or the checks above would pass on anything
    mirror = {t for _, t in imports("blocksim.jobs.mirror")}
    assert {"blocksim.jobs.base", "blocksim.engine.burst", "blocksim.engine.burst_kernel"} <= mirror
    assert "blocksim.engine" in {t for _, t in imports("blocksim.jobs.mirror", named=True)}
    kernel = {t for _, t in imports("blocksim.engine.burst_kernel")}
    assert "blocksim.engine.stretch" in kernel
    simulation = {t for _, t in imports("blocksim.simulation")}
    assert "blocksim.scenario" in simulation and "blocksim.jobs" in simulation
