"""Wikitext -> clean prose paragraphs, with mwparserfromhell.

What is kept and why (REALM/ORQA blocks are prose that a masked-LM can read):
- plain text and the *visible* text of wiki links (`[[target|text]]` -> "text"), because that is
  what a reader of the article sees;
- bold/italic and inline formatting tags: their content is prose, the markup is not;
- a few inline templates that render prose (dates, conversions, foreign-language text, dashes),
  because dropping them leaves holes such as "born ( )" or "is  long" in sentences.

What is dropped and why:
- all other templates (infoboxes, navboxes, citations, hatnotes): structured data, not prose;
- `<ref>`s, comments, tables, galleries, math and similar tags: not sentences;
- File/Image/Media links (captions are fragments), categories and interlanguage links: metadata;
- section headings (they only separate paragraphs) and the reference/"See also"-style sections,
  which are lists of citations and links;
- list items by default (fragments; `keep_lists` keeps them), magic words such as `__NOTOC__`;
- any paragraph where markup survives (malformed wikitext), so no `{{`, `[[`, `{|` reaches a block.

HTML entities are unescaped. A page whose markup breaks the parser raises `WikitextError`, which
the caller counts and skips.

How: regex passes remove most markup first (comments, dropped tags and sections, list lines,
non-inline templates and tables, plain links); mwparserfromhell's tokenizer then handles the rest,
and `render.py` turns its tokens into text without building the node tree.
"""

from __future__ import annotations

import html
import re

from realm_core.wiki.inline_templates import is_inline_template
from realm_core.wiki.render import LIST_MARK as _LIST_MARK, SKIP_SECTIONS as _SKIP_SECTIONS, render_wikitext


class WikitextError(Exception):
    """The page's markup could not be parsed; the page is skipped and counted."""


# Tags whose whole content is dropped: non-prose (the strip happens before parsing, because a
# regex pass is much cheaper than building mwparserfromhell nodes for them).
_DROP_TAGS = (
    "ref", "references", "gallery", "math", "timeline", "imagemap", "syntaxhighlight", "source",
    "score", "mapframe", "maplink", "graph", "chem", "ce", "hiero", "templatedata", "includeonly",
    "noinclude", "templatestyles", "inputbox", "categorytree", "charinsert", "pre", "code",
)
_DROP_TAG_RE = re.compile(
    r"<(%s)\b[^>]*?/>|<(%s)\b[^>]*>.*?</\2\s*>" % ("|".join(_DROP_TAGS), "|".join(_DROP_TAGS)),
    re.IGNORECASE | re.DOTALL,
)
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Line-start patterns are written as "\n..." and applied to "\n" + text instead of with `^` and
# re.MULTILINE: the same matches, but a leading literal lets the regex engine skip to candidate
# newlines, where `^` makes it try every position (several times slower on whole pages).
_LIST_LINE_RE = re.compile(r"\n[*#;][^\n]*")
_HEADING_LINE_RE = re.compile(r"\n(={1,6})\s*([^=\n][^\n]*?)\s*\1\s*$", re.MULTILINE)
# A plain article link: no nested brackets, no namespace colon (File:, Category:, fr:, ...).
# These are most of a page's nodes; rendering them with a regex before mwparserfromhell
# tokenizes the page roughly halves parse time. Anything else (captions with links, namespaced
# links) is left to the parser, and since inner links are rewritten first, a File caption
# holding links still parses as one File link and is dropped.
_SIMPLE_LINK_RE = re.compile(r"\[\[([^\[\]|:{}<>]+)(?:\|([^\[\]{}]*))?\]\]")
_BRACES_RE = re.compile(r"\{\{|\}\}|\n[ \t]*\{\||\n[ \t]*\|\}")
_TEMPLATE_NAME_RE = re.compile(r"\{\{\s*([^|{}<\n]*)")

_MAGIC_WORD_RE = re.compile(r"__[A-Z]+__")
_QUOTE_RUN_RE = re.compile(r"'{2,}")  # wikitext italic/bold markers (2, 3 or 5 quotes)
_EMPTY_PARENS_RE = re.compile(r"\(\s*[,;:–—-]?\s*\)")
_LEADING_SEP_IN_PARENS_RE = re.compile(r"\(\s*[,;:]\s*")
_TRAILING_SEP_IN_PARENS_RE = re.compile(r"\s*[,;:]\s*\)")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([,.;:)])")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
# Cheap probes that say when a pass has nothing to do (most paragraphs): a single-character class
# is a tight scan, where the passes themselves start a match attempt at every space or comma.
_ODD_SPACE_RE = re.compile(r"[\t\u00a0\u2000-\u200b\u202f\u205f\u3000]")
_ODD_WHITESPACE_RE = re.compile(r"[^\S ]")  # whitespace other than " "
_SEP_BEFORE_PAREN_RE = re.compile(r"[,;:]\s*\)")
RESIDUE = ("{{", "}}", "[[", "]]", "<ref", "{|", "|-", "&amp;")
_RESIDUE_CHARS_RE = re.compile(r"[{}\[\]<|&]")  # every RESIDUE pattern holds one of these
_HAS_WORD_RE = re.compile(r"\w")


def strip_nested(text: str) -> str:
    """Remove templates `{{...}}` and tables `{|...|}` with nesting, keeping inline templates.

    Infoboxes, navboxes and citation templates are most of a page's wikitext; removing them with
    a linear scan before mwparserfromhell tokenizes the page is what makes parsing fast.
    An unclosed `{{` or `{|` drops the rest of its line (the residue check catches the rest).
    """
    text = "\n" + text  # table markup must start a line: see _BRACES_RE
    out: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        # A table opener right at `pos` is preceded by the newline at pos - 1 (the `^` case).
        m = _BRACES_RE.search(text, pos - 1 if text[pos - 1] == "\n" else pos)
        if m is None:
            out.append(text[pos:])
            break
        tok = m.group().lstrip("\n \t")
        start = m.start() + (len(m.group()) - len(tok))
        if tok in ("}}", "|}"):  # stray closer: drop it
            out.append(text[pos:start])
            pos = m.end()
            continue
        out.append(text[pos:start])
        end = _match_close(text, start)
        if end is None:
            eol = text.find("\n", start)
            pos = n if eol < 0 else eol
            continue
        chunk = text[start:end]
        if tok == "{{":
            name_m = _TEMPLATE_NAME_RE.match(chunk)
            if name_m and is_inline_template(name_m.group(1)):
                out.append(chunk)
        pos = end
    return "".join(out)[1:]


def _match_close(text: str, start: int) -> int | None:
    """End index of the construct opened at `start` (`{{` or `{|`), honouring nesting."""
    depth = 0
    for m in _BRACES_RE.finditer(text, start - 1 if text[start - 1] == "\n" else start):
        tok = m.group().lstrip("\n \t")
        if tok in ("{{", "{|"):
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def wikitext_to_paragraphs(wikitext: str, *, keep_lists: bool = False) -> tuple[list[str], int]:
    """Clean `wikitext` into prose paragraphs.

    Returns (paragraphs, n_dropped) where n_dropped counts paragraphs removed because markup
    survived cleaning. Raises WikitextError if the parser fails on the page.
    """
    text = prepass(wikitext, keep_lists=keep_lists)
    try:
        # Bold/italic quote runs are removed by `_normalise` instead of parsed as tags: parsing them
        # is mwparserfromhell's slowest path (about a quarter of the parse time on real pages).
        rendered = render_wikitext(text)
    except Exception as exc:  # the tokenizer and RenderError: assorted errors on pathological markup
        raise WikitextError(f"{type(exc).__name__}: {exc}") from None
    return _paragraphs(rendered, keep_lists=keep_lists)


def prepass(wikitext: str, *, keep_lists: bool = False) -> str:
    """The regex passes before tokenizing: comments, dropped tags and sections, list lines (unless
    kept), non-inline templates and tables, plain links."""
    text = _COMMENT_RE.sub("", wikitext)
    text = _DROP_TAG_RE.sub("", text)
    text = _drop_skipped_sections(text)
    if not keep_lists:
        # List items are dropped anyway; removing their lines (the newline stays, so they still
        # end the paragraph before them) spares the parser a node per item.
        text = _LIST_LINE_RE.sub("\n", "\n" + text)[1:]
    text = strip_nested(text)
    return _SIMPLE_LINK_RE.sub(_link_text, text)


def _drop_skipped_sections(text: str) -> str:
    """Cut reference/"See also"-style sections (heading to the next heading of the same or a
    higher level) before parsing: they are dropped anyway and are mostly citation templates."""
    cuts: list[tuple[int, int]] = []
    skipping_level = 0
    start = 0
    for m in _HEADING_LINE_RE.finditer("\n" + text):
        level = len(m.group(1))
        at = m.start()  # of the heading line in `text` (the match starts at the "\n" before it)
        if skipping_level and level <= skipping_level:
            cuts.append((start, at))
            skipping_level = 0
        if not skipping_level and m.group(2).strip().lower() in _SKIP_SECTIONS:
            skipping_level, start = level, at
    if skipping_level:
        cuts.append((start, len(text)))
    if not cuts:
        return text
    out, pos = [], 0
    for a, b in cuts:
        out.append(text[pos:a])
        pos = b
    out.append(text[pos:])
    return "\n".join(out)


def _link_text(m: re.Match) -> str:
    if m.group(2) is not None:
        return m.group(2)
    target = m.group(1).strip()
    return target[1:] if target.startswith("#") else target.split("#", 1)[0]


def _paragraphs(rendered: str, *, keep_lists: bool) -> tuple[list[str], int]:
    paragraphs: list[str] = []
    current: list[str] = []
    dropped = 0

    def flush() -> None:
        nonlocal dropped
        if not current:
            return
        para = _normalise(" ".join(current))
        current.clear()
        if not para or not _HAS_WORD_RE.search(para):
            return
        if _RESIDUE_CHARS_RE.search(para) and any(r in para for r in RESIDUE):
            dropped += 1
            return
        paragraphs.append(para)

    for line in rendered.split("\n"):
        stripped = line.strip()
        if line.startswith(_LIST_MARK):
            flush()  # a list item is never part of the surrounding paragraph
            if keep_lists and stripped.strip(_LIST_MARK).strip():
                current.append(stripped.strip(_LIST_MARK))
                flush()
            continue
        if not stripped:
            flush()
            continue
        if stripped[0] in "|!" or stripped.startswith("{|"):
            continue  # residue of a broken table row
        current.append(stripped)
    flush()
    return paragraphs, dropped


def _normalise(text: str) -> str:
    # Each pass is skipped when its trigger character is absent: most paragraphs need few.
    if "__" in text:
        text = _MAGIC_WORD_RE.sub("", text)
    if "''" in text:
        text = _QUOTE_RUN_RE.sub("", text)
    if "&" in text:
        # Entities can be double-escaped in wikitext (`&amp;nbsp;`); a second pass resolves them.
        text = html.unescape(html.unescape(text))
    if "  " in text or _ODD_SPACE_RE.search(text):  # else every run is already one " "
        text = _SPACES_RE.sub(" ", text)
    if "(" in text:
        text = _EMPTY_PARENS_RE.sub("", text)
        text = _LEADING_SEP_IN_PARENS_RE.sub("(", text)
        if _SEP_BEFORE_PAREN_RE.search(text):
            text = _TRAILING_SEP_IN_PARENS_RE.sub(")", text)
    if (" ," in text or " ." in text or " ;" in text or " :" in text or " )" in text
            or _ODD_WHITESPACE_RE.search(text)):
        text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    if "  " in text:
        text = _SPACES_RE.sub(" ", text)
    return text.strip()
