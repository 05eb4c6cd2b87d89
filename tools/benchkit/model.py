"""What one benchmark figure is: the measured series, the value and baseline picked from them, and the target
the value is judged against. Pure data and arithmetic, no I/O, so the judging can be read (and trusted) alone."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Figure", "Series", "Target", "Verdict", "summarize"]


class Series(BaseModel):
    """One measured quantity: its samples summed up (nearest-rank percentiles)."""

    model_config = ConfigDict(frozen=True)

    unit: str
    n: int
    median: float
    p10: float
    p90: float
    p99: float
    min: float
    max: float


def _rank(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(samples: Sequence[float], unit: str) -> Series:
    """The summary of `samples` (at least one)."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples)
    return Series(
        unit=unit,
        n=len(ordered),
        median=statistics.median(ordered),
        p10=_rank(ordered, 0.10),
        p90=_rank(ordered, 0.90),
        p99=_rank(ordered, 0.99),
        min=ordered[0],
        max=ordered[-1],
    )


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    met: bool | None = Field(description="None: not judged (no baseline).")
    text: str = Field(description="'met', 'missed by X', or why it was not judged.")


class Target(BaseModel):
    """A bound on the value, alone or relative to the baseline of the same figure.

    ratio_max: value/baseline <= limit (aim: a better ratio hoped for); ratio_min: value/baseline >= limit;
    plus_max: value - baseline <= limit (in the figure's unit).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["ratio_max", "ratio_min", "plus_max"]
    limit: float
    aim: float | None = None

    def describe(self, unit: str) -> str:
        if self.kind == "ratio_max":
            aim = f" (aim {self.aim:.2f}x)" if self.aim is not None else ""
            return f"<= {self.limit:.2f}x{aim}"
        if self.kind == "ratio_min":
            return f">= {self.limit:.2f}x"
        return f"<= baseline + {self.limit:g} {unit}"

    def judge(self, value: float, baseline: float | None, unit: str) -> Verdict:
        if baseline is None or (self.kind != "plus_max" and baseline <= 0):
            return Verdict(met=None, text="not judged: no baseline")
        if self.kind == "plus_max":
            over = value - baseline - self.limit
            return Verdict(met=over <= 0, text="met" if over <= 0 else f"missed by {over:.1f} {unit}")
        ratio = value / baseline
        if self.kind == "ratio_max":
            met = ratio <= self.limit
            if met and self.aim is not None and ratio > self.aim:
                return Verdict(met=True, text=f"met (aim missed by {ratio - self.aim:.2f}x)")
            return Verdict(met=met, text="met" if met else f"missed by {ratio - self.limit:.2f}x")
        met = ratio >= self.limit
        return Verdict(met=met, text="met" if met else f"missed by {self.limit - ratio:.2f}x")


class Figure(BaseModel):
    """One row of the table: `value` against `baseline` (both medians unless the unit says otherwise), every
    series they were picked from, measured side by side in one run, and the verdict on the target."""

    name: str
    title: str
    unit: str
    value: float | None = None
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    n: int = 0
    series: dict[str, Series] = Field(default_factory=dict)
    facts: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, description="Other figures of this measurement (counts, rates, settings)."
    )
    notes: list[str] = Field(default_factory=list)
    skipped: str | None = Field(None, description="Why nothing was measured (a missing tool, a failure).")

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> Verdict | None:
        if self.target is None or self.value is None:
            return None
        return self.target.judge(self.value, self.baseline, self.unit)

    def to_json(self) -> dict[str, object]:
        """The figure with its derived ratio and verdict (properties are not fields)."""
        data = self.model_dump(mode="json")
        verdict = self.verdict
        data["ratio"] = self.ratio
        data["target_text"] = self.target.describe(self.unit) if self.target is not None else None
        data["met"] = verdict.met if verdict is not None else None
        data["verdict"] = verdict.text if verdict is not None else None
        return data
