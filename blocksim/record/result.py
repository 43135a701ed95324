"""The result of a run: events, commands, series and summary, with pandas views.

A :class:`Result` holds plain data (lists and dicts) so it can be written to
a results folder and read back unchanged; the ``*_frame`` methods build pandas
DataFrames on demand, indexed by simulated time.
"""

from __future__ import annotations

import json
from typing import Any


class Result:
    def __init__(self, scenario: dict, seed: int, profile: str,
                 events: list[dict], commands: list[dict],
                 series: dict[str, list], summary: dict):
        #: the fully resolved scenario (``Scenario.to_dict()``)
        self.scenario = scenario
        self.seed = seed
        self.profile = profile
        self.events = events
        self.commands = commands
        self.series = series
        self.summary = summary

    def __repr__(self) -> str:
        return (f"<Result {self.summary.get('scenario')!r} seed={self.seed} "
                f"profile={self.profile} events={len(self.events)} "
                f"violations={len(self.violations)}>")

    @property
    def violations(self) -> list[dict]:
        return self.summary["invariants"]["violations"]

    @property
    def ok(self) -> bool:
        """True when no invariant was violated."""
        return not self.violations

    def event_names(self, *names: str) -> list[str]:
        """The sequence of event names, optionally only those listed."""
        return [e["event"] for e in self.events if not names or e["event"] in names]

    def events_jsonl(self) -> str:
        """The event log as JSON lines (byte-identical for the same inputs)."""
        return "".join(json.dumps(e, sort_keys=False) + "\n" for e in self.events)

    # -- pandas views --------------------------------------------------------------
    def events_frame(self):
        import pandas as pd
        rows: list[dict[str, Any]] = []
        for e in self.events:
            ts = e["timestamp"]
            row = {"time": ts["seconds"] + ts["microseconds"] / 1e6, "event": e["event"]}
            row.update(e["data"])
            rows.append(row)
        df = pd.DataFrame(rows, columns=None if rows else ["time", "event"])
        return df.set_index("time")

    def series_frame(self):
        import pandas as pd
        return pd.DataFrame(self.series).set_index("time")

    def jobs_frame(self):
        import pandas as pd
        return pd.DataFrame.from_dict(self.summary["jobs"], orient="index")

    def to_dataframe(self):
        """The sampled time series (the most common view in a notebook)."""
        return self.series_frame()
