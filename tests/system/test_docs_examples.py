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
    assert "$ blocksim list scenarios | head -1 | cut -c1-40\nscenarios/backup-flaky-target-which-poli" in text
    assert text.startswith("Before.") and text.endswith("After.\n")
    assert doc_examples.examples(docs=[doc]) == []
