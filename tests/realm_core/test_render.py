"""The token renderer (render.py) against a walk of mwparserfromhell's node tree.

`render_wikitext` walks the tokenizer's output without building the tree. The oracle below is
the tree walk the stage used before (same rules, over `mwparserfromhell.parse`); the two must give
the same text on real pages and on seeded random markup soup (broken markup included: the
tokenizer accepts any input, so both sides succeed on all of it; an error on one side only would
count as a difference).
"""

from __future__ import annotations

import random

import mwparserfromhell
import pytest
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Tag, Template, Text, Wikilink

from realm_core.wiki import render
from realm_core.wiki.dump import iter_pages
from realm_core.wiki.inline_templates import render_inline_template
from realm_core.wiki.render import LIST_MARK, SKIP_SECTIONS, render_wikitext
from tests.conftest import WIKI_XML


def _walk(nodes, top_level: bool = False) -> str:
    parts, skip_level = [], 0
    for node in nodes:
        if isinstance(node, Heading):
            title = _walk(node.title.nodes).strip().lower()
            if skip_level and node.level > skip_level:
                continue
            skip_level = node.level if (top_level and title in SKIP_SECTIONS) else 0
            parts.append("\n\n")
        elif not skip_level:
            parts.append(_node(node))
    return "".join(parts)


def _node(node) -> str:
    if isinstance(node, Text):
        return str(node.value)
    if isinstance(node, Wikilink):
        target = _walk(node.title.nodes).strip()
        colon = target.startswith(":")
        target = target.lstrip(":").strip()
        if ":" in target and not colon:
            prefix = target.split(":", 1)[0].strip().lower()
            if prefix in render._NON_TEXT_NAMESPACES or render._INTERLANG_RE.match(prefix):
                return ""
        if node.text is not None:
            return _walk(node.text.nodes)
        return target.split("#", 1)[0] if not target.startswith("#") else target[1:]
    if isinstance(node, Tag):
        if node.wiki_markup in render._LIST_MARKUP:
            return "\n" + LIST_MARK
        if node.wiki_markup == ":":
            return "\n"
        tag = str(node.tag).strip().lower()
        if tag in ("br", "hr"):
            return " " if tag == "br" else "\n\n"
        if node.wiki_markup in ("''", "'''") or tag in render._FORMAT_TAGS:
            return _walk(node.contents.nodes) if node.contents is not None else ""
        return ""
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, Template):
        return render_inline_template(_walk(node.name.nodes),
                                      [_walk(p.value.nodes).strip() for p in node.params if not p.showkey])
    if isinstance(node, ExternalLink):
        return _walk(node.title.nodes) if node.title else ""
    return ""  # comments, arguments


def tree_walk(text: str) -> str:
    return _walk(mwparserfromhell.parse(text, skip_style_tags=True).nodes, top_level=True)


def outcome(fn, text: str):
    try:
        return "ok", fn(text)
    except Exception as exc:  # noqa: BLE001 - both sides must fail on the same inputs
        return "error", type(exc).__name__


# Pieces that open, separate and close every construct the tokenizer knows, plus text.
_PIECES = [
    "{{", "}}", "|", "=", "[[", "]]", "[", "]", "http://x.org ", "<", ">", "</", "/>", "<!--", "-->",
    "&amp;", "&#65;", "&#x42;", "&bogus;", "\n== ", " ==\n", "\n=== See also ===\n", "\n* ", "\n: ",
    "\n;", "{{{", "}}}", "<span class=\"a\">", "</span>", "<br>", "<ref>", "</ref>", "<b>", "</b>",
    "{|", "|}", "|-", "''", "'''", "File:", "Category:", "fr:", "#", "{{convert|", "{{lang|fr|",
    "{{birth date|1900|1|2}}", "{{nowrap|", "Paris", " word ", "x", "é", "\n", " ",
]


def _soup(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 40)))


def test_equals_the_tree_walk_on_random_markup():
    rng = random.Random(1234)
    cases = [_soup(rng) for _ in range(3000)]
    mismatches = [c for c in cases if outcome(render_wikitext, c)[0] != outcome(tree_walk, c)[0]
                  or (outcome(tree_walk, c)[0] == "ok" and render_wikitext(c) != tree_walk(c))]
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ, e.g. {mismatches[0]!r}"
    assert sum(outcome(tree_walk, c)[0] == "ok" for c in cases) > 2000


@pytest.mark.parametrize("dump", sorted(p for p in WIKI_XML.glob("*/*") if p.is_file()), ids=lambda p: p.name)
def test_equals_the_tree_walk_on_every_shipped_page(dump):
    """Raw page wikitext (no regex pre-pass), so templates, tables and refs all reach both."""
    pages = [p.text for p in iter_pages(dump) if p.text.strip()]
    assert pages
    for text in pages:
        assert outcome(render_wikitext, text) == outcome(tree_walk, text)
