"""Fixed-width text tables: the one way the chapters and the benchmarks print a table.

Text, not HTML, so that a table is the same in a terminal, in a saved notebook output (which
nbval compares character by character) and on the website.  :func:`text_table` lays out cells
already turned into text; :func:`format_table` does that for rows of dicts, formatting each
column with a function such as :func:`human`.
"""
from __future__ import annotations

from typing import Callable, Sequence


def human(n: float, digits: int = 3) -> str:
    """1234567 -> '1.23M'; exact below 1000."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{digits}g}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def text_table(headers: Sequence, rows: Sequence[Sequence], align: str = "right") -> str:
    """A header line, a line of dashes, then one line per row; columns two spaces apart.

    Cells are ``str()``-ed.  ``align="right"`` suits numbers; ``"left"`` pads every cell on the
    right, the last column too (the benchmark reports' layout).
    """
    if align not in ("right", "left"):
        raise ValueError(f"align must be 'right' or 'left', got {align!r}")
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    for i, r in enumerate(cells[1:], 1):
        if len(r) != len(headers):
            raise ValueError(f"row {i} has {len(r)} cells for {len(headers)} columns: {r}")
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    pad = str.rjust if align == "right" else str.ljust
    lines = ["  ".join(pad(c, w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]] | None = None,
                 formats: dict[str, Callable] | None = None) -> str:
    """Rows of dicts as a right-aligned :func:`text_table`; ``columns`` are (key, header) pairs
    (default: every key of the first row) and ``formats`` maps a key to the function that writes
    its cells (default ``str``)."""
    if not rows:
        raise ValueError("no rows to format")
    columns = columns or [(key, key) for key in rows[0]]
    formats = formats or {}
    cells = [[formats.get(key, str)(row[key]) for key, _ in columns] for row in rows]
    return text_table([head for _, head in columns], cells)
