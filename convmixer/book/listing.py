"""The library's own source, shown in the book beside the prose that explains it.

A chapter that explains ``PatchEmbedding`` shows ``show_source(PatchEmbedding)``: the code is
read from the installed library at the moment the cell runs, so the listing can never drift
from the code the chapter's checks exercise (and nbval fails when it does).

The result renders as a highlighted Python block everywhere a chapter is read: its Markdown
form (a fenced ``python`` block) is what Jupyter, Colab and the built site display (the site
highlights it with the theme's colours, light and dark), and its plain-text form is the source
itself, for terminals and for nbval's comparison.
"""
from __future__ import annotations

import inspect
import textwrap


class Source:
    """A piece of library source: ``str()`` is the code, Markdown is a highlighted block."""

    def __init__(self, code: str, title: str):
        self.code, self.title = code, title

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return f"# {self.title}\n{self.code}"

    def _repr_markdown_(self) -> str:
        return f"`{self.title}`\n\n```python\n{self.code}\n```\n"


def show_source(obj, start: str | None = None, stop: str | None = None) -> Source:
    """The source of a library class, function or method, dedented, with where it lives.

    ``start`` and ``stop`` cut a long definition down to the lines a paragraph discusses: the
    listing begins at the first line containing ``start`` and ends before the next line, after
    that, containing ``stop``.  A marker that is not found raises ``ValueError`` (the source
    changed and the chapter's prose must be checked against it), never a silently shorter listing.
    """
    lines = textwrap.dedent(inspect.getsource(obj)).rstrip("\n").split("\n")
    first, last = 0, len(lines)
    if start is not None:
        found = [i for i, line in enumerate(lines) if start in line]
        if not found:
            raise ValueError(f"{start!r} is not in the source of {obj.__qualname__}")
        first = found[0]
    if stop is not None:
        found = [i for i, line in enumerate(lines) if stop in line and i > first]
        if not found:
            raise ValueError(f"{stop!r} is not in the source of {obj.__qualname__} after line {first + 1}")
        last = found[0]
    module = inspect.getmodule(obj).__name__
    return Source("\n".join(lines[first:last]).rstrip("\n"), f"{module}.{obj.__qualname__}")
