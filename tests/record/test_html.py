"""The interactive timeline (plotly, the [html] extra)."""

import hashlib
import json
import re
import sys

import pytest
from click.testing import CliRunner

import blocksim
from blocksim.cli.commands import main
from blocksim.errors import BlocksimError
from blocksim.record.html import save_timeline_html, timeline_html
from blocksim.record.results import save_result


@pytest.fixture(scope="module")
def refused():
    return blocksim.run("scenarios/mirror-never-ready-guest-outpaces.toml")


def figure_data(page: str) -> list[dict]:
    """The traces plotly was handed (the page's Plotly.newPlot call)."""
    match = re.search(r'Plotly\.newPlot\(\s*"blocksim-timeline",\s*(\[.*?\]),\s*\{', page, re.S)
    return json.loads(match.group(1))


def test_every_event_and_command_has_its_details_under_the_pointer(refused):
    traces = figure_data(timeline_html(refused))
    hovers = [h for t in traces for h in (t.get("hovertemplate") or [])
              if isinstance(t.get("hovertemplate"), list)]
    command_hovers = [h for h in hovers if "arguments:" in h]
    assert len(command_hovers) == len(refused.commands)
    refusal = next(c for c in refused.commands if "error" in c)
    assert any("<b>refused</b>" in h and refusal["error"]["desc"] in h.replace('\\"', '"')
               for h in command_hovers)
    events = [e for e in refused.events if e["event"] not in ("JOB_STATUS_CHANGE",)]
    assert sum("<b>" + e["event"] + "</b>" in h for e in events for h in hovers) >= len(events)
    # the job's status spans
    assert any(t.get("name") == "running" and t.get("orientation") == "h" for t in traces)


def test_the_page_is_a_pure_function_of_the_result(refused, tmp_path):
    a = save_timeline_html(refused, tmp_path / "a.html").read_bytes()
    b = save_timeline_html(refused, tmp_path / "b.html").read_bytes()
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    assert b"plotly" in a and len(a) > 1_000_000          # plotly.js inside: opens offline


def test_plot_writes_html_from_the_command_line(refused, tmp_path):
    folder = save_result(refused, tmp_path / "run")
    out = CliRunner().invoke(main, ["plot", str(folder), "-o", str(tmp_path / "t.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "t.html").read_text()
    assert page.startswith("<!doctype html>") and "blocksim-timeline" in page


def test_without_plotly_the_error_names_the_extra(refused, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(BlocksimError, match=r"pip install 'blocksim\[html\]'"):
        timeline_html(refused)
