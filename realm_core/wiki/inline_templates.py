"""The few templates that render prose inside sentences, and how each renders.

Every other template is dropped. These are kept because removing them breaks sentences:
"born {{birth date|1961|8|4}}" would become "born", "{{convert|5|km}} long" would become "long".
Dates matter twice: they are salient spans that REALM masks.
"""

from __future__ import annotations

import calendar

_MONTHS = list(calendar.month_name)

_DATE_TEMPLATES = {
    "birth date", "death date", "birth date and age", "death date and age", "start date",
    "end date", "start date and age", "end date and age", "dob", "date",
}
_FIRST_PARAM = {
    "nowrap", "nobr", "small", "big", "smaller", "larger", "sic", "smallcaps", "sc", "abbr",
    "nihongo", "ill", "interlanguage link", "interlanguage link multi", "visible anchor", "vanchor",
    "w", "lang-en", "nowrap begin", "em", "strong", "var", "mono", "keypress", "quote", "qi",
    "lqq", "bold", "italic", "ital", "un", "proper name", "math", "mvar",
}
_LITERAL = {
    "ndash": "–", "mdash": "—", "snd": " – ", "spaced ndash": " – ", "spnd": " – ", "nbsp": " ",
    "'": "'", "-": "", "thinsp": " ", "spaces": " ", "emdash": "—", "endash": "–", "clear": "",
    "·": " · ", "dot": " · ", "•": " • ", "pi": "π", "=": "=", "!": "|",
}
_OTHER = {"convert", "cvt", "as of", "circa", "c.", "frac", "fraction", "transl", "transliteration",
          "ordinal", "year"}
_RANGE_WORDS = {"-", "–", "to", "and", "or", "by", "x", "×", "&"}


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


def is_inline_template(name: str) -> bool:
    """True if the template called `name` renders prose and must survive the template strip."""
    n = _norm(name)
    return (
        n in _DATE_TEMPLATES or n in _FIRST_PARAM or n in _LITERAL or n in _OTHER
        or n == "lang" or n.startswith("lang-")
    )


def render_inline_template(name: str, positional: list[str]) -> str:
    """Render an allowed template, given its rendered name and the stripped rendered values of
    its positional parameters, to text (unknown ones render as '')."""
    name = _norm(name)
    if name in _LITERAL:
        return _LITERAL[name]
    if name in _DATE_TEMPLATES:
        return _render_date(positional)
    if name in _FIRST_PARAM:
        return positional[0] if positional else ""
    if name.startswith("lang-"):
        return positional[0] if positional else ""
    if name == "lang":
        return positional[1] if len(positional) > 1 else ""
    if name in ("transl", "transliteration"):
        return positional[-1] if positional else ""
    if name in ("convert", "cvt"):
        return _render_convert(positional)
    if name == "as of":
        return "As of " + _render_date(positional) if positional else ""
    if name in ("circa", "c."):
        return "c. " + positional[0] if positional else "c."
    if name in ("frac", "fraction"):
        if len(positional) == 3:
            return f"{positional[0]} {positional[1]}/{positional[2]}"
        if len(positional) == 2:
            return f"{positional[0]}/{positional[1]}"
        return f"1/{positional[0]}" if positional else ""
    if name == "ordinal" and positional:
        return _ordinal(positional[0])
    if name == "year" and positional:
        return positional[0]
    return ""


def _render_date(params: list[str]) -> str:
    """{{birth date|1961|8|4}} -> '4 August 1961'; year-only and year-month forms too."""
    vals = [p for p in params if p and "=" not in p][:3]
    try:
        nums = [int(v) for v in vals]
    except ValueError:
        return " ".join(vals)
    if len(nums) >= 3 and 1 <= nums[1] <= 12:
        return f"{nums[2]} {_MONTHS[nums[1]]} {nums[0]}"
    if len(nums) == 2 and 1 <= nums[1] <= 12:
        return f"{_MONTHS[nums[1]]} {nums[0]}"
    return str(nums[0]) if nums else ""


def _render_convert(params: list[str]) -> str:
    """{{convert|5|km|mi}} -> '5 km'; {{convert|5|to|10|km}} -> '5 to 10 km'."""
    if not params:
        return ""
    if len(params) >= 4 and params[1] in _RANGE_WORDS:
        return f"{params[0]} {params[1]} {params[2]} {params[3]}".replace(" - ", "–")
    if len(params) >= 2:
        return f"{params[0]} {params[1]}"
    return params[0]


def _ordinal(value: str) -> str:
    try:
        n = int(value)
    except ValueError:
        return value
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
