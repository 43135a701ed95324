"""Writing what an explore found: per broken property the shrunk
counterexample as a standalone scenario (``blocksim run`` reproduces it), its
results folder and timeline, and ``report.md`` / ``report.json``.

The folder holds nothing that depends on the wall clock or the machine, so
the same command writes the same bytes.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..record.atomic import write_text
from ..scenario.explore import EXPLORE_KINDS
from .space import case_scenario, to_toml

__all__ = ["write_report", "counterexample_toml", "kind_rates", "slug"]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "property"


def counterexample_toml(outcome: Mapping[str, Any], index: str) -> tuple[str, str]:
    """``(file name, TOML text)`` of the counterexample of property ``index``."""
    item = outcome["found"][index]
    prop = outcome["props"][int(index)]
    name = f"{outcome['name']}-{slug(prop)}"
    raw = case_scenario(outcome["raw"], item["case"], name=name, properties=[prop])
    raw.pop("description", None)
    raw = {"name": raw.pop("name"),
           "description": f"Counterexample to '{prop}' found by blocksim explore", **raw}
    header = (f"{name}\n\nFound by: blocksim explore {outcome['spec_path']} --seed {outcome['seed']} "
              f"--runs {outcome['budget']}" + (f" --workers {outcome['workers']}" if outcome["workers"] > 1 else "")
              + f"\nBreaks: {prop}\nBecause: {item['reasons'][index]}\n"
              f"Faults added: {item['after']} after shrinking"
              + (f" ({item['before']} in the case first found)" if item.get("before") is not None else "")
              + f"\nReproduce: blocksim run {name}.toml")
    return f"{name}.toml", to_toml(raw, header)


def kind_rates(outcome: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per allowed kind: generated cases that had at least one fault of it,
    how many broke a property, and the same for the cases without it."""
    cases = list(outcome["cases"].values())
    rows = []
    for kind in outcome["kinds"]:
        with_ = [c for c in cases if kind in c["present"]]
        without = [c for c in cases if kind not in c["present"]]
        fw = sum(1 for c in with_ if c["broken"])
        fo = sum(1 for c in without if c["broken"])
        rows.append({"kind": kind, "cases_with": len(with_), "failing_with": fw,
                     "rate_with": round(fw / len(with_), 4) if with_ else None,
                     "cases_without": len(without), "failing_without": fo,
                     "rate_without": round(fo / len(without), 4) if without else None})
    return rows


def _pct(rate) -> str:
    return "-" if rate is None else f"{100 * rate:.1f} %"


def write_report(outcome: Mapping[str, Any], out, results: bool = True) -> dict[str, Any]:
    """Write the folder ``out`` (replaced); returns the report's data."""
    from ..scenario import load_scenario
    from ..simulation import run
    from ..record.results import save_result

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cases = list(outcome["cases"].values())
    broken_by = {}
    for c in cases:
        for i in c["broken"]:
            broken_by[i] = broken_by.get(i, 0) + 1
    found = []
    for index in sorted(outcome["found"], key=int):
        item = outcome["found"][index]
        filename, text = counterexample_toml(outcome, index)
        write_text(out / filename, text)
        entry = {"property": outcome["props"][int(index)], "reason": item["reasons"][index],
                 "scenario": filename, "faults_before": item.get("before"),
                 "faults_after": item["after"], "case": item["case"],
                 "failing_cases": broken_by.get(int(index), 0)}
        if results:
            result = run(load_scenario(out / filename))
            folder = save_result(result, out / filename.removesuffix(".toml"))
            entry["results"] = folder.name
        found.append(entry)
    holds = [p for i, p in enumerate(outcome["props"]) if str(i) not in outcome["found"]]
    report = {"spec": outcome["spec_path"], "seed": outcome["seed"], "budget": outcome["budget"],
              "workers": outcome["workers"], "cases_generated": len(cases),
              "runs": outcome["runs"], "properties": outcome["props"], "broken": found,
              "held": holds, "base_case_broken": [outcome["props"][i] for i, _ in outcome["base_broken"]],
              "kinds": kind_rates(outcome)}
    write_text(out / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_text(out / "report.md", _markdown(report))
    return report


def _markdown(r: Mapping[str, Any]) -> str:
    lines = [f"# blocksim explore: {r['spec']}", "",
             f"Seed {r['seed']}, budget {r['budget']} cases"
             + (f" over {r['workers']} workers" if r["workers"] > 1 else "")
             + f": {r['cases_generated']} cases generated, {r['runs']} runs in all (with shrinking).", ""]
    if r["base_case_broken"]:
        lines += ["The base case (no fault added) already breaks: "
                  + "; ".join(f"`{p}`" for p in r["base_case_broken"]), ""]
    lines += ["## Broken properties", ""]
    if not r["broken"]:
        lines += ["None within the budget.", ""]
    for b in r["broken"]:
        lines += [f"### `{b['property']}`", "",
                  f"- why: {b['reason']}",
                  f"- smallest schedule: {b['faults_after']} fault(s)"
                  + (f" (shrunk from {b['faults_before']})" if b["faults_before"] is not None else ""),
                  f"- scenario: `{b['scenario']}` (`blocksim run {b['scenario']}`)"
                  + (f", results in `{b['results']}/`" if b.get("results") else ""),
                  f"- generated cases breaking it: {b['failing_cases']} of {r['cases_generated']}", "",
                  "```json", json.dumps(b["case"], indent=1), "```", ""]
    lines += ["## Properties that held", ""] + [f"- `{p}`" for p in r["held"]] + [""]
    lines += ["## Failure rate by fault kind", "",
              "| kind | cases with it | failing | rate | cases without | failing | rate |",
              "|---|---|---|---|---|---|---|"]
    for k in r["kinds"]:
        lines.append(f"| {k['kind']} | {k['cases_with']} | {k['failing_with']} | {_pct(k['rate_with'])} "
                     f"| {k['cases_without']} | {k['failing_without']} | {_pct(k['rate_without'])} |")
    return "\n".join(lines) + "\n"
