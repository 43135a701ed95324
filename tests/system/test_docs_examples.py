"""The console examples of README.md and docs/ are what the code prints
(docs/examples.py regenerates them: ``python docs/examples.py --update``)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("doc_examples", ROOT / "docs" / "examples.py")
doc_examples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(doc_examples)


def test_every_example_in_the_docs_is_what_the_code_prints():
    assert doc_examples.examples() == [], "run: python docs/examples.py --update"


def test_the_check_sees_a_moved_example_and_update_mends_it(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("Before.\n\n<!-- example: blocksim validate scenarios/mirror-cancel-when-ready.toml -->\n"
                   "```text\nOK something else\n```\n\n<!-- example -->\n```console\n"
                   "$ blocksim list scenarios | head -1 | cut -c1-40\nold output\n```\nAfter.\n")
    assert doc_examples.examples(docs=[doc]) == [
        "page.md: blocksim validate scenarios/mirror-cancel-when-ready.toml",
        "page.md: session blocksim list scenarios | head -1 | cut -c1-40"]
    assert doc_examples.examples(update=True, docs=[doc])
    text = doc.read_text()
    assert "OK scenarios/mirror-cancel-when-ready.toml\n```" in text
    assert "$ blocksim list scenarios | head -1 | cut -c1-40\nscenarios/backup-checkpoints-incremental" in text
    assert text.startswith("Before.") and text.endswith("After.\n")
    assert doc_examples.examples(docs=[doc]) == []


def test_a_figure_is_checked_against_a_fresh_run_and_update_redraws_it(tmp_path):
    import matplotlib
    image = tmp_path / "timeline.png"
    # a stale image the installed matplotlib drew (its PNG Software text says so)
    software = f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/".encode()
    chunk = b"tEXtSoftware\x00" + software
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + (len(chunk) - 4).to_bytes(4, "big") + chunk)
    doc = tmp_path / "page.md"
    doc.write_text(f"<!-- figure: scenarios/mirror-cancel-when-ready.toml -->\n![t]({image})\n")
    assert doc_examples.examples(docs=[doc]) == [f"page.md: figure {image}"]
    doc_examples.examples(update=True, docs=[doc])
    assert image.read_bytes().startswith(b"\x89PNG") and len(image.read_bytes()) > 10_000
    assert doc_examples.examples(docs=[doc]) == []
    # an image another matplotlib drew is listed as not checked, not as moved
    image.write_bytes(image.read_bytes().replace(b"version" + matplotlib.__version__.encode(),
                                                 b"version0.0.0"[:7 + len(matplotlib.__version__)]))
    unchecked = []
    assert doc_examples.examples(docs=[doc], unchecked=unchecked) == []
    assert len(unchecked) == 1 and "drawn by Matplotlib version0.0" in unchecked[0]
