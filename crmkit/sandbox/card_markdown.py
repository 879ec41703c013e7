"""Adaptive Card text as Teams shows it: the card markdown subset, rendered to inert HTML.

Teams renders ``TextBlock.text``, ``Fact.title`` and ``Fact.value`` as a subset of CommonMark:
``**bold**``, ``_italic_`` (and ``*italic*``), bullet lists (``- item``), numbered lists
(``1. item``) with items on separate lines, and links ``[title](url)``. Headings, tables, images,
preformatted text and block quotes are not supported and show as typed. A line break outside a
list needs a blank line (``\\n\\n``); a single one is a soft break. As in CommonMark, a backslash
before ASCII punctuation shows the punctuation and hides the backslash (crmkit writes ``\\+49`` and
``\\<GmbH\\>`` so a record value shows as typed, not as formatting).

Everything is HTML-escaped before the few tags above are added, so card text cannot inject markup;
link targets other than http(s) and mailto stay plain text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape

_PUNCT = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_BACKSLASH_ESCAPE = re.compile(rf"\\([{_PUNCT}])")
# Private-use sentinels stand for escaped characters while the markup rules run.
_OPEN, _CLOSE = "\ue000", "\ue001"
_TOKEN = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*(\d{1,9})[.)]\s+(.*)$")
_LINK = re.compile(r"\[([^\[\]]+)\]\(([^()\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=\S)(.+?)(?<=\S)\*(?![*\w])")
_ITALIC_UNDERSCORE = re.compile(r"(?<![_\w])_(?=\S)(.+?)(?<=\S)_(?![_\w])")
_SAFE_SCHEMES = ("http://", "https://", "mailto:")


def render(text: str, clean: Callable[[str], str] = lambda s: s) -> str:
    """``text`` (card markdown) as HTML; ``clean`` first drops characters the page must not show."""
    # Line breaks first: Teams separates list items with \r or \n, and ``clean`` may drop \r.
    source = str(text).replace("\r\n", "\n").replace("\r", "\n")
    source = clean(source).replace(_OPEN, "").replace(_CLOSE, "")
    literals: list[str] = []

    def hide(m: re.Match[str]) -> str:
        literals.append(m.group(1))
        return f"{_OPEN}{len(literals) - 1}{_CLOSE}"

    source = _BACKSLASH_ESCAPE.sub(hide, source)
    blocks = [b for b in re.split(r"\n\s*\n", source) if b.strip()]
    html = "".join(_block(b) for b in blocks)
    return _TOKEN.sub(lambda m: escape(literals[int(m.group(1))]), html)


def _block(block: str) -> str:
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    kind = ""

    def flush_para() -> None:
        joined = " ".join(line.strip() for line in para).strip()
        if joined:
            out.append(f"<p>{_inline(joined)}</p>")
        para.clear()

    def flush_list() -> None:
        nonlocal kind
        if items:
            out.append(f"<{kind}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{kind}>")
            items.clear()
        kind = ""

    for line in block.split("\n"):
        bullet, numbered = _BULLET.match(line), _NUMBERED.match(line)
        if bullet or numbered:
            flush_para()
            want = "ul" if bullet else "ol"
            if kind and kind != want:
                flush_list()
            kind = want
            items.append(bullet.group(1) if bullet else numbered.group(2))  # type: ignore[union-attr]
        else:
            flush_list()
            para.append(line)
    flush_para()
    flush_list()
    return "".join(out)


def _inline(text: str) -> str:
    html = escape(text, quote=True)

    def link(m: re.Match[str]) -> str:
        label, target = m.group(1), m.group(2)
        real = _TOKEN.sub("", target).replace("&amp;", "&")
        if not real.lower().startswith(_SAFE_SCHEMES) or _TOKEN.search(target):
            return m.group(0)
        return f'<a href="{target}" rel="noopener noreferrer">{label}</a>'

    html = _LINK.sub(link, html)
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    html = _ITALIC_STAR.sub(r"<em>\1</em>", html)
    return _ITALIC_UNDERSCORE.sub(r"<em>\1</em>", html)
