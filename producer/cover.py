"""A book's cover as an `.m4b` can carry it: JPEG or PNG as they are, SVG rasterized to PNG (resvg, through
resvg-py: a self-contained wheel, no system library), anything else reported.

Standard Ebooks ship their covers as SVG; before this they were dropped without a word. Whatever cover
cannot be used now becomes a warning on the book (`Cover.warnings`), never silence.
"""

from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["COVER_HEIGHT_PX", "Cover", "book_cover", "rasterize_svg"]

COVER_HEIGHT_PX = 1400  # an SVG cover's rendered height: what audiobook players show, at a modest size
MAX_COVER_BYTES = 8 * 1024 * 1024  # as schemas.messages.MAX_COVER_BYTES: the cover travels in SQL
_CARRIED = {"image/jpeg": "image/jpeg", "image/jpg": "image/jpeg", "image/png": "image/png"}
_SVG = "image/svg+xml"


@dataclass(frozen=True, slots=True)
class Cover:
    """The cover to use (None: none usable), its media type, and what went wrong with the book's covers."""

    image: bytes | None = None
    media_type: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def book_cover(book: Any, where: str) -> Cover:
    """The cover of an ebooklib book: the EPUB 3 `cover-image` item, else the EPUB 2 `<meta name="cover">`
    one. An SVG is rasterized with the book's images beside it (a cover that draws its picture from
    `cover.jpg` finds it); a cover that cannot be used is a warning naming it and why."""
    warnings: list[str] = []
    for item in _cover_items(book):
        data = bytes(item.get_content() or b"")
        media = str(getattr(item, "media_type", "") or "").lower()
        name = item.get_name()
        if not data:
            warnings.append(f"{where}: the cover {name} is empty; the .m4b has no cover")
        elif media in _CARRIED:
            if len(data) <= MAX_COVER_BYTES:
                return Cover(data, _CARRIED[media], tuple(warnings))
            warnings.append(f"{where}: the cover {name} is {len(data):,} bytes, above {MAX_COVER_BYTES:,}; "
                            "the .m4b has no cover")
        elif media == _SVG:
            try:
                return Cover(rasterize_svg(data, name, _images(book)), "image/png", tuple(warnings))
            except ValueError as err:
                warnings.append(f"{where}: the SVG cover {name} could not be drawn ({err}); the .m4b has no cover")
        else:
            warnings.append(f"{where}: the cover {name} is {media or 'of an unknown type'}, which an .m4b "
                            "cannot carry (JPEG, PNG or SVG); the .m4b has no cover")
    return Cover(None, None, tuple(warnings))


def _cover_items(book: Any) -> list[Any]:
    import ebooklib

    found = list(book.get_items_of_type(ebooklib.ITEM_COVER))
    found += [item for item in book.get_items()
              if "cover-image" in (getattr(item, "properties", None) or []) and item not in found]
    # EPUB 2: `<meta name="cover" content="ITEM-ID"/>`, which ebooklib keeps among the OPF `meta` entries
    ids = [(attributes or {}).get("content") for _, attributes in book.get_metadata("OPF", "meta")
           if (attributes or {}).get("name") == "cover"]
    ids += [(attributes or {}).get("content") or value for value, attributes in book.get_metadata("OPF", "cover")]
    for item in (book.get_item_with_id(i) for i in ids if i):
        if item is not None and item not in found:
            found.append(item)
    return found


def _images(book: Any) -> dict[str, bytes]:
    import ebooklib

    return {item.get_name(): bytes(item.get_content() or b"") for item in book.get_items()
            if item.get_type() in (ebooklib.ITEM_IMAGE, ebooklib.ITEM_COVER)}


def rasterize_svg(svg: bytes, name: str = "cover.svg", resources: dict[str, bytes] | None = None,
                  height_px: int = COVER_HEIGHT_PX) -> bytes:
    """`svg` drawn as a PNG `height_px` tall; `resources` (book-relative name -> bytes) are laid out as in
    the book, so the SVG's relative `xlink:href`s resolve.

    Raises:
        ValueError: not an SVG resvg can draw, or the PNG would pass MAX_COVER_BYTES.
    """
    import resvg_py

    try:
        text = svg.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError("not UTF-8 text") from err
    with tempfile.TemporaryDirectory(prefix="ttsfleet-cover-") as folder:
        root = Path(folder)
        for member, data in (resources or {}).items():
            target = (root / posixpath.normpath(member)).resolve()
            if target.is_relative_to(root.resolve()):  # never outside the scratch folder
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        base = (root / posixpath.dirname(posixpath.normpath(name))).resolve()
        base.mkdir(parents=True, exist_ok=True)
        try:
            png = bytes(resvg_py.svg_to_bytes(svg_string=text, height=height_px, resources_dir=str(base)))
        except BaseException as err:  # resvg raises ValueError, and a Rust panic surfaces as PanicException
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
    if len(png) > MAX_COVER_BYTES:
        raise ValueError(f"the drawn cover is {len(png):,} bytes, above {MAX_COVER_BYTES:,}")
    return png
