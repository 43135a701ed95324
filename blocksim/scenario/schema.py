"""The JSON Schema of the format, for editors (``blocksim schema``).
"""

from typing import Any

from .document import Scenario


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of the input format (keys in the file's spelling)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    schema["properties"]["name"]["description"] = "default: the file name without extension"
    schema["description"] = ("A blocksim scenario: images, drives, faults, workloads, block jobs "
                             "and actions. Sizes are bytes or strings such as '4KiB'; durations "
                             "are seconds or strings such as '10ms'.")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "blocksim scenario",
            **{k: v for k, v in schema.items() if k != "title"}}
