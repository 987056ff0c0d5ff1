"""Streaming reader for MediaWiki XML export dumps (schema 0.8 to 0.11).

Memory does not depend on dump size: `iterparse` hands over one `<page>` at a time and every
finished element is cleared and detached from the root, so a 20 GB dump parses in a few MB.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from realm_core.errors import RealmError
from realm_core.io import ReadTracker, open_binary, read_errors


@dataclass(frozen=True, slots=True)
class Page:
    """One `<page>` of a dump, as exported (wikitext untouched)."""

    page_id: int
    title: str
    ns: int
    redirect: bool
    text: str


# Templates that mark a disambiguation page on English Wikipedia (names are matched
# case-insensitively, with '_' == ' '); `__DISAMBIG__` is the magic word the same templates emit.
_DISAMBIG_TEMPLATES = (
    "disambiguation", "disambig", "disamb", "dab", "disambiguation cleanup", "hndis", "hndab",
    "geodis", "numberdis", "letter-numbercombdisambig", "mathdab", "hospitaldis", "schooldis",
    "roaddis", "callsigndis", "mil-unit-dis", "species latin name disambiguation", "given name disambiguation",
)
# Two searches, not one alternation: a pattern that starts with the literal "{{" lets the regex
# engine skip ahead to candidates (several times faster on whole pages; this runs on every page of the dump).
_DISAMBIG_TEMPLATE_RE = re.compile(
    r"\{\{\s*(?:" + "|".join(re.escape(n).replace(r"\ ", r"[ _]") for n in _DISAMBIG_TEMPLATES) + r")\s*(?:\||\}\})",
    re.IGNORECASE,
)
_DISAMBIG_MAGIC_RE = re.compile(r"__DISAMBIG__", re.IGNORECASE)


def is_disambiguation(title: str, text: str) -> bool:
    """True for disambiguation pages: '(disambiguation)' titles (ORQA) or a disambiguation template."""
    return ("(disambiguation)" in title.lower() or _DISAMBIG_TEMPLATE_RE.search(text) is not None
            or _DISAMBIG_MAGIC_RE.search(text) is not None)


def drop_reason(page: Page, drop_title_prefixes: list[str] | tuple[str, ...]) -> str | None:
    """Why `page` is not an article for the corpus, or None to keep it (ORQA's page filter)."""
    if page.ns != 0:
        return "not_article_namespace"
    if page.redirect:
        return "redirect"
    if any(page.title.startswith(p) for p in drop_title_prefixes):
        return "list_or_index_title"
    if is_disambiguation(page.title, page.text):
        return "disambiguation"
    if not page.text.strip():
        return "empty_text"
    return None


def _local(tag: str) -> str:
    # Every export schema version puts elements in its own namespace
    # ({http://www.mediawiki.org/xml/export-0.10/}page); compare local names only.
    return tag.rsplit("}", 1)[-1]


def iter_pages(path: str | Path, tracker: ReadTracker | None = None) -> Iterator[Page]:
    """Yield every `<page>` of the dump at `path` in file order.

    Raises RealmError naming the file for: an empty file, a file that is not a MediaWiki export,
    malformed XML (with line and column) and truncated or corrupt compressed data.
    """
    path = Path(path)
    fh = open_binary(path, tracker)
    seen_root = False
    n_pages = 0
    try:
        context = ET.iterparse(fh, events=("start", "end"))
        root = None
        for event, elem in context:
            if not seen_root:
                seen_root = True
                root = elem
                if _local(elem.tag) != "mediawiki":
                    raise RealmError(f"{path}: not a MediaWiki XML dump (root element <{_local(elem.tag)}>)")
                continue
            if event != "end" or _local(elem.tag) != "page":
                continue
            yield _page_from_element(elem, path)
            n_pages += 1
            # Detach the finished page so the tree never grows with the dump.
            elem.clear()
            if root is not None:
                root.clear()
    except ET.ParseError as exc:
        if not seen_root and exc.code == 3:  # expat XML_ERROR_NO_ELEMENTS: nothing at all
            raise RealmError(f"{path}: empty file (no XML content)") from None
        if not seen_root:
            raise RealmError(f"{path}: not a MediaWiki XML dump ({exc})") from None
        line, col = exc.position
        raise RealmError(
            f"{path}: malformed or truncated XML at line {line}, column {col} after {n_pages} pages ({_reason(exc)})"
        ) from None
    except read_errors() as exc:
        raise RealmError(
            f"{path}: truncated or corrupt compressed data after {n_pages} pages ({exc})"
        ) from None
    finally:
        if tracker is not None:
            tracker.position()  # snapshot before close, so progress ends at 100%
        fh.close()
        if tracker is not None and tracker.raw is not None:
            tracker.raw.close()


def _reason(exc: ET.ParseError) -> str:
    return str(exc).split(":")[0]


def _page_from_element(elem: ET.Element, path: Path) -> Page:
    title = ns = page_id = None
    redirect = False
    text = ""
    for child in elem:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            ns = child.text
        elif name == "id":
            page_id = child.text
        elif name == "redirect":
            redirect = True
        elif name == "revision":
            # Dumps of "pages-articles" hold one revision; with several, the last one is current.
            for rev_child in child:
                if _local(rev_child.tag) == "text":
                    text = rev_child.text or ""
    if title is None or page_id is None:
        raise RealmError(f"{path}: <page> without <title> or <id> (not a valid export)")
    try:
        pid = int(page_id)
        nsv = int(ns) if ns is not None else (0 if ":" not in title else -1)
    except ValueError:
        raise RealmError(f"{path}: page '{title}' has a non-integer <id> or <ns>") from None
    return Page(page_id=pid, title=title, ns=nsv, redirect=redirect, text=text)
