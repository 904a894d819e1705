"""Contact sheets: a grid of thumbnails, each with a few lines of text under it (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lit_garbage.data.images import load_rgb, shown

THUMB = 180
COLUMNS = 5
LINE = 15


def _tile(path: Path, lines: Sequence[str], font) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB + LINE * len(lines) + 4), "white")
    try:
        image = load_rgb(path)
        image.thumbnail((THUMB, THUMB))
        tile.paste(image, ((THUMB - image.width) // 2, (THUMB - image.height) // 2))
    except Exception as err:  # noqa: BLE001 - a photo that cannot be drawn still gets its caption
        ImageDraw.Draw(tile).text((4, 4), f"unreadable: {type(err).__name__}", fill="red", font=font)
    draw = ImageDraw.Draw(tile)
    for n, text in enumerate(lines):
        while len(text) > 4 and draw.textlength(text, font=font) > THUMB - 4:
            text = text[:-2] + "…"
        draw.text((2, THUMB + 2 + LINE * n), text, fill="black", font=font)
    return tile


def contact_sheets(out: Path, stem: str, title: str, items: Sequence[tuple[Path, Sequence[str]]],
                   columns: int = COLUMNS) -> list[Path]:
    """`stem`_1.png, `stem`_2.png ... (5 rows of `columns` photos each) of (photo, caption lines); the files
    written."""
    per_sheet = 5 * columns
    font = ImageFont.load_default(size=12)
    title_font = ImageFont.load_default(size=16)
    written = []
    for page, start in enumerate(range(0, len(items), per_sheet), start=1):
        tiles = [_tile(path, [shown(line) for line in lines], font) for path, lines in items[start:start + per_sheet]]
        rows = -(-len(tiles) // columns)
        tw, th = THUMB + 8, max(t.height for t in tiles) + 8
        sheet = Image.new("RGB", (columns * tw, 30 + rows * th), (235, 235, 235))
        ImageDraw.Draw(sheet).text((6, 6), f"{title} ({start + 1}-{start + len(tiles)} of {len(items)})", fill="black",
                                   font=title_font)
        for k, tile in enumerate(tiles):
            sheet.paste(tile, (4 + (k % columns) * tw, 30 + (k // columns) * th))
        path = out / f"{stem}_{page}.png"
        sheet.save(path)
        written.append(path)
    return written
