"""Sphinx extension: keep the static book self-contained and free of dead widgets.

Loaded by ``_config.yml`` (``sphinx: local_extensions: {book_site: tools/}``).  On every
page, before Sphinx collects images:

* The Open-in-Colab badge image (``colab.research.google.com/assets/colab-badge.svg``,
  which the notebook needs on GitHub and Colab) is served from ``_assets/colab-badge.svg``
  instead, so the page requests nothing from another host.  The link itself is unchanged.
* ipywidgets outputs (``application/vnd.jupyter.widget-view+json``) are replaced by a short
  note saying the explorer runs in Colab or Jupyter.  A static page has no kernel, so a
  rendered slider would move nothing; the chapter's own static figure shows the result.
* The saved widget state and the widget-manager scripts myst-nb would load from CDNs
  (``require.js``, ``@jupyter-widgets/html-manager``) are dropped from the page, and so is
  sphinx-thebe's loader, which names thebe's CDN address (``launch_buttons.thebe`` is off:
  the book's live code runs on Colab).

It also registers the citation style ``author_year_round``: "(Trockman and Kolter, 2023)" for
``{cite:p}`` and "Trockman and Kolter (2023)" for ``{cite:t}``, instead of numbers in brackets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sphinxcontrib.bibtex.plugin
from docutils import nodes
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

BADGE_REMOTE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LOCAL = "/_assets/colab-badge.svg"  # "/" = relative to the book root (Sphinx srcdir)
WIDGET_VIEW = '<script type="application/vnd.jupyter.widget-view+json">'
WIDGET_NOTE = ("Interactive explorer: it runs when this chapter is opened in Colab or Jupyter "
               "(launch button at the top of the page).")


def _round_brackets() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class AuthorYearRound(AuthorYearReferenceStyle):
    """Author-year citations in round brackets."""

    bracket_parenthetical: BracketStyle = field(default_factory=_round_brackets)
    bracket_textual: BracketStyle = field(default_factory=_round_brackets)
    bracket_author: BracketStyle = field(default_factory=_round_brackets)
    bracket_label: BracketStyle = field(default_factory=_round_brackets)
    bracket_year: BracketStyle = field(default_factory=_round_brackets)


sphinxcontrib.bibtex.plugin.register_plugin(
    "sphinxcontrib.bibtex.style.referencing", "author_year_round", AuthorYearRound)


def _localise_badges(doctree: nodes.document) -> None:
    for image in doctree.findall(nodes.image):
        if image.get("uri") == BADGE_REMOTE:
            image["uri"] = BADGE_LOCAL
            image["candidates"] = {"*": BADGE_LOCAL}


def _replace_widget_views(doctree: nodes.document) -> int:
    """Replace each output that holds widget views by one note; return how many were replaced."""
    replaced = 0
    for raw in list(doctree.findall(nodes.raw)):
        if raw.parent is None or not raw.astext().lstrip().startswith(WIDGET_VIEW):
            continue
        parent = raw.parent
        if any("widget-note" in c.get("classes", []) for c in parent.children):
            parent.remove(raw)  # one note per output area is enough
            continue
        note = nodes.paragraph(WIDGET_NOTE, WIDGET_NOTE, classes=["widget-note"])
        parent.replace(raw, note)
        replaced += 1
    return replaced


def _unwanted_script(js) -> bool:
    """A script the static book must not carry: thebe's CDN loader, widget state or manager."""
    filename = getattr(js, "filename", None) or ""
    attributes = getattr(js, "attributes", {}) or {}
    return (filename.endswith("sphinx-thebe.js")
            or "THEBE_JS_URL" in attributes.get("body", "")
            or attributes.get("type") == "application/vnd.jupyter.widget-state+json"
            or "@jupyter-widgets" in filename or filename.endswith("require.min.js"))


def on_doctree_read(app: Sphinx, doctree: nodes.document) -> None:
    _localise_badges(doctree)
    _replace_widget_views(doctree)


def on_html_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if "script_files" in context:
        # A new list: the builder's own list is restored for the next page anyway.
        context["script_files"] = [js for js in context["script_files"] if not _unwanted_script(js)]


def setup(app: Sphinx):
    # Priority 100: before the image collector (500), so the local badge is copied to _images.
    app.connect("doctree-read", on_doctree_read, priority=100)
    # Priority 900: after myst-nb and sphinx-thebe have added their scripts to the page.
    app.connect("html-page-context", on_html_page_context, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
