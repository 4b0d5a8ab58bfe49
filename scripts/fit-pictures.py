"""Draw docs/fits.png, the README's picture of each fit: one 16:9 image rendered at
width=160&height=160 with each fit, by the store's own rendition code.

  .venv/bin/python scripts/fit-pictures.py
"""

import asyncio
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pyvips  # noqa: E402

from store import Backends, open_store  # noqa: E402
from store.renditions import FITS, Spec  # noqa: E402

SIDE = 160


def source_image() -> bytes:
    """480x270: a sky-to-ground gradient, a sun, and a frame to show the edges."""
    xyz = pyvips.Image.xyz(480, 270)
    x, y = xyz[0], xyz[1]
    sky = (y * 0 + 90).bandjoin([y * 0.4 + 140, 255 - y * 0.3])
    sun = ((x - 360) ** 2 + (y - 90) ** 2) < 45**2
    image = sun.ifthenelse([250, 200, 40], sky)
    ground = y > 200
    image = ground.ifthenelse([60, 140, 60], image)
    frame = (x < 6) | (x > 473) | (y < 6) | (y > 263)
    return frame.ifthenelse([200, 40, 40], image).cast("uchar").write_to_buffer(".png")


def tile(data: bytes, label: str) -> pyvips.Image:
    """The rendition in the 160x160 box asked for (grey outline), on a checkerboard
    of its own size (transparent padding shows), its label under it."""
    image = pyvips.Image.new_from_buffer(data, "")
    if not image.hasalpha():
        image = image.bandjoin(255)
    xyz = pyvips.Image.xyz(image.width, image.height)
    checks = (((xyz[0] // 10) + (xyz[1] // 10)) % 2 == 0).ifthenelse([235] * 3, [200] * 3)
    shown = checks.cast("uchar").composite2(image, "over")[:3]
    box = pyvips.Image.black(SIDE + 2, SIDE + 2).copy(interpretation="srgb").bandjoin([0, 0])
    box = (
        (box + 170)
        .cast("uchar")
        .insert((pyvips.Image.black(SIDE, SIDE, bands=3) + 255).cast("uchar"), 1, 1)
    )
    box = box.insert(
        shown.cast("uchar"), 1 + (SIDE - image.width) // 2, 1 + (SIDE - image.height) // 2
    )
    board = box.embed(19, 19, SIDE + 40, SIDE + 40, extend="white")
    text = pyvips.Image.text(label, dpi=110)
    caption = text.ifthenelse([30, 30, 30], [255, 255, 255], blend=True)
    caption = caption.gravity("centre", SIDE + 40, 36, extend="white")
    return board.cast("uchar").join(caption.cast("uchar"), "vertical")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Backends.of(folder), 1 << 30)
        try:
            original = source_image()
            await store.create_album("docs")
            upload = await store.begin_upload("docs", "landscape.png")
            await upload.write(original)
            record = await upload.commit()
            tiles = [
                tile(
                    pyvips.Image.new_from_buffer(original, "")
                    .resize(SIDE / 480)
                    .write_to_buffer(".png"),
                    "original 16:9",
                )
            ]
            for fit in FITS:
                made = await store.rendition(record, Spec(SIDE, SIDE, fit, "png", None))
                data = b"".join([chunk async for chunk in made.chunks(0, made.size)])
                made.close()
                tiles.append(tile(data, f"fit={fit}"))
        finally:
            store.close()
    strip = pyvips.Image.arrayjoin(tiles, across=len(tiles), shim=4, background=[255, 255, 255])
    out = os.path.join(ROOT, "docs", "fits.png")
    strip.write_to_file(out)
    print(out, strip.width, "x", strip.height)


if __name__ == "__main__":
    asyncio.run(main())
