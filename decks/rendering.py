"""Card text: Markdown to HTML, then sanitised, so card content can never run script."""

from __future__ import annotations

from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# "breaks": a single newline in a card is a line break, as students typed it.
_markdown = MarkdownIt("commonmark", {"breaks": True, "html": False}).enable("table")

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "th": {"align"},
    "td": {"align"},
}


# Pure in the text, so cached: a study step shows the same question twice (question, then
# answer) and a class studies the same cards; the cache spares each request ~0.1 ms.
@lru_cache(maxsize=2048)
def render_markdown(text: str) -> SafeString:
    html = _markdown.render(text)
    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"https", "http", "mailto", "data"},
        link_rel="noopener noreferrer",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above
