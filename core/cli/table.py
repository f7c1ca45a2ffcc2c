"""Printing rows of numbers as a Markdown table (the README's tables are pasted from these)."""

from __future__ import annotations


def markdown_table(rows: list[dict], keys: list[str], fmt=str) -> str:
    """One header row, one row per dict; a missing or None value prints as —."""
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("—" if row.get(k) is None else fmt(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
