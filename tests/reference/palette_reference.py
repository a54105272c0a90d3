"""Palette adherence in CIELAB as scikit-image computes it, for darkroom-pipeline's
`scores::palette_delta_e` and `scores::srgb_to_lab`.

Writes tests/fixtures/clip-score/palette.json:
  lab        a few sRGB colours in CIELAB: skimage.color.rgb2lab (D65, 2°), and OpenCV's
             cv2.cvtColor(float32 RGB / 255, COLOR_RGB2Lab) beside it (lab_opencv: the same
             formulas through interpolated tables, within 0.5 of a unit on dark colours)
  images     for odd.png, the astronaut and the coffee, and each palette: the mean over the
             pixels of skimage.color.deltaE_cie76 to the nearest palette colour

    .venv/bin/python tests/reference/palette_reference.py
"""

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.color import deltaE_cie76, rgb2lab

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "clip-score" / "palette.json"

COLOURS = ["#000000", "#ffffff", "#ff0000", "#00ff00", "#0000ff", "#0a0a0a", "#808080", "#1e90ff", "#c8a27a"]
PALETTES = {
    "brand": ["#0b1f3a", "#f2efe9", "#d94f30"],
    "grey": ["#808080"],
    "warm": ["#ffcc00", "#ff6600", "#993300", "#fff5e0"],
}
IMAGES = {
    "odd": FIX / "clip-score" / "odd.png",
    "astronaut": FIX / "images" / "astronaut.png",
    "coffee": FIX / "images" / "coffee.png",
}


def rgb(hex_colour):
    h = hex_colour.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def lab(pixels_uint8):
    return rgb2lab(pixels_uint8)


def lab_opencv(pixels_uint8):
    return cv2.cvtColor(pixels_uint8.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).astype(np.float64)


def main():
    out = {"lab": {}, "lab_opencv": {}, "images": {}}
    for c in COLOURS:
        out["lab"][c] = lab(np.array([[rgb(c)]], dtype=np.uint8))[0, 0].tolist()
        out["lab_opencv"][c] = lab_opencv(np.array([[rgb(c)]], dtype=np.uint8))[0, 0].tolist()
    for name, path in IMAGES.items():
        pixels = np.asarray(Image.open(path).convert("RGB"))
        image_lab = lab(pixels).reshape(-1, 3)
        out["images"][name] = {}
        for pname, palette in PALETTES.items():
            targets = lab(np.array([[rgb(c) for c in palette]], dtype=np.uint8))[0]
            dist = deltaE_cie76(image_lab[:, None, :], targets[None, :, :]).min(1)
            out["images"][name][pname] = float(dist.mean())
    out["palettes"] = PALETTES
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["images"], indent=1))


if __name__ == "__main__":
    main()
