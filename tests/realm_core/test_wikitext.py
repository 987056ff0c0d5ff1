"""Wikitext cleaning: what is kept, what is dropped, and no markup residue on real pages."""

from __future__ import annotations

import pytest

from realm_core.wiki.dump import drop_reason, iter_pages
from realm_core.wiki.wikitext import RESIDUE, strip_nested, wikitext_to_paragraphs
from tests.conftest import WIKI_XML


def clean(text: str, **kw) -> list[str]:
    return wikitext_to_paragraphs(text, **kw)[0]


@pytest.mark.parametrize(
    "wikitext,expected",
    [
        ("'''Anarchism''' is a [[political philosophy|philosophy]].", "Anarchism is a philosophy."),
        ("A [[Paris]] trip.", "A Paris trip."),
        ("Text.<ref>Smith 2001, p. 4</ref> More.<ref name=x/>", "Text. More."),
        ("{{Infobox person\n| name = X\n| born = {{birth date|1900|1|1}}\n}}\nX was a man.", "X was a man."),
        ("He was born {{birth date|1961|8|4}} in Hawaii.", "He was born 4 August 1961 in Hawaii."),
        ("The river is {{convert|5|km|mi}} long.", "The river is 5 km long."),
        ("Its name is {{lang|fr|La Seine}} in French.", "Its name is La Seine in French."),
        ("[[File:A.jpg|thumb|A caption]]The city grew.", "The city grew."),
        ("Body.\n[[Category:Cities]]\n[[fr:Ville]]", "Body."),
        ("AT&amp;T and R&nbsp;D&hellip;", "AT&T and R D…"),
        ("Text <!-- hidden note --> here. __NOTOC__", "Text here."),
        ("See [http://example.org the site] now.", "See the site now."),
        ("Anarchism ({{IPAc-en|ˌ|æ|n}}) is old.", "Anarchism is old."),
        ("A [[:Category:Foo|category link]] stays.", "A category link stays."),
        ("x<sup>2</sup> and ''italic'' text.", "x2 and italic text."),
        # Constructs the regex pre-pass leaves to the token renderer (render.py):
        ("A [[Paris|the {{lang|fr|Ville}} of light]] trip.", "A the Ville of light trip."),
        ("Caf&#233; and &#x41;BC.", "Café and ABC."),
        ("Visit http://example.org today.", "Visit today."),
        ('<span style="{{nowrap|x}}" class=a>Kept</span> text.', "Kept text."),
        ("Line one<br/>line two.", "Line one line two."),
        ("The river is {{convert|5|km|abbr=on}} long.", "The river is 5 km long."),
        ("A [[File:X.png|thumb|see [[Paris]]]] B [[de:Paris]] C [[wikt:word|word]].", "A B C word."),
        ("A [[#Section|here]] and [[Page#Anchor]] B.", "A here and Page B."),
        ("Text <table><tr><td>cell</td></tr></table> after.", "Text after."),
        ("A {{circa|1900}} B {{frac|1|2}} C {{ordinal|3}}.", "A c. 1900 B 1/2 C 3rd."),
    ],
)
def test_kept_and_dropped(wikitext, expected):
    assert clean(wikitext) == [expected]


def test_headings_split_paragraphs_and_are_dropped():
    text = "Intro line one\ncontinues here.\n\n== History ==\nOld times.\n=== Early ===\nVery old."
    assert clean(text) == ["Intro line one continues here.", "Old times.", "Very old."]


def test_reference_sections_and_lists_dropped_lists_optional():
    text = "Prose.\n* item one\n* item two\nMore prose.\n== References ==\nSmith, J. (2001). A book.\n== Other ==\nLast."
    assert clean(text) == ["Prose.", "More prose.", "Last."]
    assert clean(text, keep_lists=True) == ["Prose.", "item one", "item two", "More prose.", "Last."]


def test_tables_removed_with_nesting():
    text = 'Before.\n{| class="wikitable"\n|-\n! A !! B\n|-\n| {{flag|EE}} || {|\n| nested\n|}\n|}\nAfter.'
    assert clean(text) == ["Before.", "After."]


def test_unclosed_template_leaves_no_residue():
    paragraphs, dropped = wikitext_to_paragraphs("Good text.\n\nBad {{cite web | url = x\n| title = y\n\nFine again.")
    assert "Good text." in paragraphs and "Fine again." in paragraphs
    assert not any(r in p for p in paragraphs for r in RESIDUE)


def test_strip_nested_keeps_inline_templates():
    assert strip_nested("a {{Infobox|x={{b}}}} b {{convert|1|m}} c") == "a  b {{convert|1|m}} c"


def test_no_markup_residue_on_every_shipped_page():
    n_pages = n_paragraphs = 0
    for path in sorted(p for p in WIKI_XML.glob("*/*")):
        for page in iter_pages(path):
            if drop_reason(page, ["List of "]):
                continue
            paragraphs, _ = wikitext_to_paragraphs(page.text)
            n_pages += 1
            n_paragraphs += len(paragraphs)
            for para in paragraphs:
                bad = [r for r in RESIDUE if r in para]
                assert not bad, f"{path.name} / {page.title}: {bad} in {para[:200]!r}"
    assert n_pages > 150 and n_paragraphs > 5000


def test_reference_sections_are_cut_to_the_next_heading_of_same_level():
    text = ("Lead.\n== See also ==\n* [[A]]\n=== Sub of see also ===\nStill skipped.\n"
            "== History ==\nKept.\n== External links ==\n{{Official website|x}}\n")
    assert clean(text) == ["Lead.", "Kept."]
