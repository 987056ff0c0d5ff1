"""Render mwparserfromhell's token stream to text, without building its node tree.

mwparserfromhell parses in two steps: a C tokenizer turns wikitext into a flat list of tokens,
then a Python builder turns the tokens into a tree of node objects (Wikicode, SmartList, Template,
Parameter, Tag, Attribute, ...). Building the tree cost twice the tokenizing on real pages, and we
only ever walk the tree once to render it. This module walks the tokens directly, with the same
grammar as the builder (`mwparserfromhell/parser/builder.py`: which token opens, separates and
closes each construct), and renders each construct as the tree walk did:

- text as is; a wiki link as its visible text (nothing for File:/Category:/interlanguage links);
- inline templates through `inline_templates.render_inline_template`, every other template as "";
- formatting tags (<b>, <span>, ...) as their contents; <br> as a space, <hr> as a paragraph break;
  list markers as a line break plus `LIST_MARK`; other tags, comments and arguments as "";
- HTML entities as their character; bracketed external links as their title;
- headings as a paragraph break, and at the top level a reference/"See also"-style heading drops
  everything up to the next heading of the same or a higher level.

The golden-corpus test holds this to the tree walk's output, block for block.
"""

from __future__ import annotations

import re

from mwparserfromhell.nodes import HTMLEntity
from mwparserfromhell.parser import tokens as T
from mwparserfromhell.parser.builder import Builder

try:
    from mwparserfromhell.parser._tokenizer import CTokenizer as _Tokenizer
except ImportError:  # a platform without the C extension: the same tokens, in pure Python
    from mwparserfromhell.parser.tokenizer import Tokenizer as _Tokenizer

from realm_core.wiki.inline_templates import render_inline_template

# Sections made of citations and links, not prose.
SKIP_SECTIONS = {
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "sources", "citations", "footnotes", "notes and references", "references and notes",
    "works cited", "literature", "selected bibliography", "publications", "discography",
    "filmography", "gallery", "links",
}
_NON_TEXT_NAMESPACES = {"file", "image", "media", "category"}
_INTERLANG_RE = re.compile(r"^[a-z]{2,3}(?:-[a-z]{2,8})*$|^simple$")
_FORMAT_TAGS = {
    "b", "i", "u", "s", "em", "strong", "small", "big", "sup", "sub", "span", "font", "abbr",
    "tt", "var", "cite", "del", "ins", "center", "div", "p", "blockquote", "poem", "nowiki", "q",
    "dfn", "kbd", "samp", "mark", "bdi", "bdo", "strike", "section", "onlyinclude", "lang",
}
_LIST_MARKUP = {"*", "#", ";"}
LIST_MARK = "\x01"  # starts the line of a list item in the rendered text


class RenderError(Exception):
    """The token stream does not have the builder's shape (the builder would raise too)."""


# Stop sets: a construct's contents run until one of these token types (not consumed).
_TEMPLATE_STOP = (T.TemplateParamSeparator, T.TemplateClose)
_PARAM_STOP = (T.TemplateParamEquals, T.TemplateParamSeparator, T.TemplateClose)
_ARGUMENT_STOP = (T.ArgumentSeparator, T.ArgumentClose)
_WIKILINK_STOP = (T.WikilinkSeparator, T.WikilinkClose)
_EXTLINK_STOP = (T.ExternalLinkSeparator, T.ExternalLinkClose)
_HEADING_STOP = (T.HeadingEnd,)
_COMMENT_STOP = (T.CommentEnd,)
_TAG_NAME_STOP = (T.TagAttrStart, T.TagCloseOpen, T.TagCloseSelfclose)
_ATTR_STOP = (T.TagAttrStart, T.TagCloseOpen, T.TagCloseSelfclose, T.TagAttrEquals, T.TagAttrQuote)
_TAG_BODY_STOP = (T.TagOpenClose,)
_TAG_CLOSE_STOP = (T.TagCloseClose,)
_NOTHING = ()


def render_wikitext(text: str) -> str:
    """Tokenize `text` (bold/italic quotes left as text) and render it; see the module doc."""
    toks = _Tokenizer().tokenize(text, 0, True)
    renderer = _Renderer(toks)
    out = renderer.seq(_NOTHING, top_level=True)
    if renderer.i != len(toks):  # a stray closing token at the top level
        raise RenderError(f"unexpected {type(toks[renderer.i]).__name__}")
    return out


class _Renderer:
    """One pass over a token list; `i` is the next token. Each method consumes one construct."""

    def __init__(self, toks: list) -> None:
        self.toks = toks
        self.i = 0

    def _next(self, expected) -> None:
        """Consume the token at `i`, which must be of type `expected`."""
        if self.i >= len(self.toks) or type(self.toks[self.i]) is not expected:
            raise RenderError(f"missing {expected.__name__}")
        self.i += 1

    def _at(self, kind) -> bool:
        return self.i < len(self.toks) and type(self.toks[self.i]) is kind

    def seq(self, stop: tuple, top_level: bool = False) -> str:
        """Render nodes until a token of a `stop` type (or the end); the heading rule applies at
        the top level only, as in the tree walk."""
        toks, n = self.toks, len(self.toks)
        parts: list[str] = []
        skip_level = 0  # inside a skipped section of this heading level
        while self.i < n:
            tok = toks[self.i]
            kind = type(tok)
            if kind in stop:
                break
            if kind is T.Text:
                self.i += 1
                if not skip_level:
                    parts.append(tok["text"])
                continue
            if kind is T.HeadingStart:
                self.i += 1
                title = self.seq(_HEADING_STOP).strip().lower()
                self._next(T.HeadingEnd)
                level = tok["level"]
                if skip_level and level > skip_level:
                    continue
                skip_level = level if (top_level and title in SKIP_SECTIONS) else 0
                parts.append("\n\n")
                continue
            rendered = self.node(kind, tok)
            if not skip_level:
                parts.append(rendered)
        else:
            if stop:
                raise RenderError(f"missing {stop[-1].__name__}")
        return "".join(parts)

    def node(self, kind, tok) -> str:
        """Render the construct that starts at `tok` (token `i`), consuming it whole."""
        self.i += 1
        if kind is T.WikilinkOpen:
            return self._wikilink()
        if kind is T.TemplateOpen:
            return self._template()
        if kind is T.TagOpenOpen:
            return self._tag(tok)
        if kind is T.HTMLEntityStart:
            return self._entity()
        if kind is T.ExternalLinkOpen:
            return self._external_link()
        if kind is T.CommentStart:
            self.seq(_COMMENT_STOP)
            self._next(T.CommentEnd)
            return ""
        if kind is T.ArgumentOpen:
            self.seq(_ARGUMENT_STOP)
            if self._at(T.ArgumentSeparator):
                self.i += 1
                self.seq((T.ArgumentClose,))
            self._next(T.ArgumentClose)
            return ""
        raise RenderError(f"unexpected {kind.__name__}")

    def _wikilink(self) -> str:
        title, text = None, self.seq(_WIKILINK_STOP)
        while self._at(T.WikilinkSeparator):  # as the builder: the last separator splits
            self.i += 1
            title, text = text, self.seq(_WIKILINK_STOP)
        self._next(T.WikilinkClose)
        if title is None:
            title, text = text, None
        target = title.strip()
        leading_colon = target.startswith(":")
        target = target.lstrip(":").strip()
        if ":" in target and not leading_colon:
            prefix = target.split(":", 1)[0].strip().lower()
            if prefix in _NON_TEXT_NAMESPACES or _INTERLANG_RE.match(prefix):
                return ""
        if text is not None:
            return text
        return target.split("#", 1)[0] if not target.startswith("#") else target[1:]

    def _template(self) -> str:
        name = self.seq(_TEMPLATE_STOP)
        positional: list[str] = []
        while self._at(T.TemplateParamSeparator):
            self.i += 1
            value, showkey = self.seq(_PARAM_STOP), False
            while self._at(T.TemplateParamEquals):  # key=value: the value follows the last "="
                self.i += 1
                value, showkey = self.seq(_PARAM_STOP), True
            if not showkey:
                positional.append(value.strip())
        self._next(T.TemplateClose)
        return render_inline_template(name, positional)

    def _external_link(self) -> str:
        url_seen, title = False, self.seq(_EXTLINK_STOP)
        while self._at(T.ExternalLinkSeparator):
            self.i += 1
            url_seen, title = True, self.seq(_EXTLINK_STOP)
        self._next(T.ExternalLinkClose)
        return title if url_seen else ""  # a bare URL renders as nothing

    def _entity(self) -> str:
        toks = self.toks
        tok = toks[self.i]
        if type(tok) is T.HTMLEntityNumeric:
            tok = toks[self.i + 1]
            if type(tok) is T.HTMLEntityHex:
                node = HTMLEntity(toks[self.i + 2]["text"], named=False, hexadecimal=True, hex_char=tok["char"])
                self.i += 3
            else:
                node = HTMLEntity(tok["text"], named=False, hexadecimal=False)
                self.i += 2
        else:
            node = HTMLEntity(tok["text"], named=True, hexadecimal=False)
            self.i += 1
        self._next(T.HTMLEntityEnd)
        return node.normalize()

    def _tag(self, open_tok) -> str:
        markup = open_tok.get("wiki_markup")
        start = self.i
        self.seq(_TAG_NAME_STOP)
        name_toks = self.toks[start:self.i]
        while self._at(T.TagAttrStart):  # attributes: consumed, never rendered
            self.i += 1
            while True:
                self.seq(_ATTR_STOP)
                if self._at(T.TagAttrEquals) or self._at(T.TagAttrQuote):
                    self.i += 1
                    continue
                break
        contents = None
        if self._at(T.TagCloseSelfclose):
            self.i += 1
        else:
            self._next(T.TagCloseOpen)
            contents = self.seq(_TAG_BODY_STOP)
            self._next(T.TagOpenClose)
            self.seq(_TAG_CLOSE_STOP)
            self._next(T.TagCloseClose)
        if markup in _LIST_MARKUP:
            return "\n" + LIST_MARK
        if markup == ":":  # indentation (quotes, replies): keep the text as its own line
            return "\n"
        tag = _raw(name_toks).strip().lower()
        if tag in ("br", "hr"):
            return " " if tag == "br" else "\n\n"
        if markup in ("''", "'''") or tag in _FORMAT_TAGS:
            return contents if contents is not None else ""
        return ""  # tables, refs and any other tag: not prose


def _raw(toks: list) -> str:
    """The wikitext of a token run, as `str()` of the builder's nodes gives it (tag names)."""
    if all(type(t) is T.Text for t in toks):
        return "".join(t["text"] for t in toks)
    return str(Builder().build(list(toks)))  # rare: markup inside a tag name
