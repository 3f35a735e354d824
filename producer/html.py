"""(X)HTML to speakable text: block elements become paragraphs, whitespace is collapsed.

Shared by the Markdown reader (raw HTML blocks) and the EPUB reader (after it has shaped the document:
headings, verse, notes). `LINE_BREAK` / `HEADING_END` marks put in by the caller are kept.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from producer.chunks import HEADING_END, LINE_BREAK

__all__ = ["BLOCK_TAGS", "collapse_blank_lines", "html_text", "parse_html", "soup_text"]

BLOCK_TAGS = ["p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote",
              "pre", "dd", "dt", "tr", "figcaption", "caption", "aside", "header", "footer", "table",
              "hgroup", "figure", "nav", "body"]
_MARKS = f"{LINE_BREAK}{HEADING_END}"


def parse_html(html: str | bytes) -> Any:
    """A BeautifulSoup tree of `html` with the lenient html.parser (XHTML, fragments, bad markup)."""
    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML is fine for html.parser
        return BeautifulSoup(html, "html.parser")


def html_text(html: str | bytes) -> str:
    """Visible text of an (X)HTML document or fragment."""
    return soup_text(parse_html(html))


def soup_text(soup: Any) -> str:
    """Visible text of a parsed tree (changed in place): blocks become paragraphs, `<br>` a newline,
    table cells are separated by commas, runs of whitespace collapse (except in `<pre>`)."""
    from bs4 import NavigableString

    for tag in soup(["script", "style", "head", "title"]):
        tag.decompose()
    for string in list(soup.find_all(string=True)):
        if type(string) is not NavigableString:  # comments, <?xml?>, <!DOCTYPE>: not text
            string.extract()
        elif string.parent is not None and string.parent.name != "pre":
            string.replace_with(NavigableString(re.sub(rf"[^\S{_MARKS}]+", " ", str(string))))
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(["td", "th"]):
        tag.append(", ")
    for tag in soup.find_all(BLOCK_TAGS):
        tag.insert(0, "\n\n")
        tag.append("\n\n")
    text = re.sub(rf"[ \t]*([{_MARKS}\n])[ \t]*", r"\1", soup.get_text())
    return collapse_blank_lines(text)


def collapse_blank_lines(text: str) -> str:
    """At most one blank line anywhere: inside one job, two blank lines would read as a chapter break."""
    blank = rf"[^\S\n{_MARKS}]*"
    return re.sub(rf"\n{blank}(?:\n{blank})+\n", "\n\n", text).strip()
