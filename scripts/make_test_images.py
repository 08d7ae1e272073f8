"""Writes the JPEG fixtures of tests/IGpt.Api.Tests/HostileInputTests.cs that ImageSharp 2.1 cannot encode.

Run once with Debian's Python (PIL): /usr/bin/python3 scripts/make_test_images.py
Each image is 16 pixels wide and 8 tall as stored: the left half black, the right half white.
"""
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images"


def halves(mode: str, black, white) -> Image.Image:
    image = Image.new(mode, (16, 8), white)
    image.paste(black, (0, 0, 8, 8))
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # CMYK JPEG (Adobe APP14 marker, inverted CMYK as Photoshop writes it).
    halves("CMYK", (0, 0, 0, 255), (0, 0, 0, 0)).save(OUT / "cmyk.jpg", quality=95)
    # Progressive (SOF2) JPEG.
    halves("RGB", (0, 0, 0), (255, 255, 255)).save(OUT / "progressive.jpg", quality=95, progressive=True)
    # EXIF orientation 6: a viewer rotates it 90 degrees clockwise, showing 8x16 with the black half on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    halves("RGB", (0, 0, 0), (255, 255, 255)).save(OUT / "exif-rotated.jpg", quality=95, exif=exif.tobytes())
    for path in sorted(OUT.glob("*.jpg")):
        print(path.name, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
