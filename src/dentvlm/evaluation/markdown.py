"""Formatting shared by report.md's tables and `dentvlm test`'s terminal summary."""

from __future__ import annotations

UNDEFINED = "n/a"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def pct(value: float | None, bounds: list[float] | None = None) -> str:
    """A rate in % with one decimal and its interval (none when absent or undefined); "n/a" when the rate is
    not defined."""
    if value is None:
        return UNDEFINED
    defined = bounds and bounds[0] == bounds[0]  # NaN: no resample defined it
    return f"{100 * value:.1f}" + (f" [{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]" if defined else "")
