"""Procedural phantoms (concentration maps) for the categories of the real dataset, seeded, no downloads.

Every generator is `f(rng: numpy.random.Generator, size: int) -> float32 (size, size)` in [0, 1] with
maximum 1 (an empty draw is impossible by construction). Shapes are drawn with PIL at 3× the size and
box-averaged down (3× is enough: 9 sub-samples per pixel), so edges are anti-aliased the way a finite pixel sees a sharp object.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter

Generator = Callable[[np.random.Generator, int], np.ndarray]
_SS = 3  # supersampling factor of the drawings


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("F", (size * _SS, size * _SS), 0.0)
    return img, ImageDraw.Draw(img)


def _downsample(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img, np.float32).reshape(size, _SS, size, _SS).mean(axis=(1, 3))


def _finish(img: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Downsample the supersampled drawing (unless already (size, size)) and scale its maximum to 1."""
    a = img if isinstance(img, np.ndarray) else _downsample(img, size)
    a = np.clip(a, 0, None)
    peak = a.max()
    return (a / peak if peak > 0 else a).astype(np.float32)


def _level(rng) -> float:
    return float(rng.uniform(0.4, 1.0))


def _text_blob(draw, xy, text, font, level):
    draw.text(xy, text, fill=level, font=font, anchor="mm")


def shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """Ellipses, polygons, rings and letters at random places, sizes and concentrations."""
    img, draw = _canvas(size)
    n = _SS * size
    for _ in range(int(rng.integers(2, 6))):
        kind = rng.choice(["ellipse", "polygon", "ring", "letter"])
        cx, cy = rng.uniform(0.15, 0.85, 2) * n
        r = rng.uniform(0.06, 0.2) * n
        level = _level(rng)
        if kind == "ellipse":
            rx, ry = r, r * rng.uniform(0.4, 1.0)
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=level)
        elif kind == "polygon":
            k = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.6, 1.0, k)
            draw.polygon(list(zip(cx + rad * np.cos(ang), cy + rad * np.sin(ang))), fill=level)
        elif kind == "ring":
            width = max(_SS, int(r * rng.uniform(0.2, 0.5)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=level, width=width)
        else:
            font = ImageFont.load_default(size=max(8, int(2.5 * r)))  # PIL's bundled font: no file needed
            _text_blob(draw, (cx, cy), rng.choice(list(string.ascii_uppercase)), font, level)
    return _finish(img, size)


def resolution(rng: np.random.Generator, size: int) -> np.ndarray:
    """Groups of line pairs or dot pairs whose gap shrinks from group to group."""
    img, draw = _canvas(size)
    n = _SS * size
    groups = int(rng.integers(3, 5))
    gaps = np.geomspace(0.08, 0.02, groups) * n  # decreasing spacing
    vertical = rng.random() < 0.5
    dots = rng.random() < 0.5
    for g, gap in enumerate(gaps):
        centre = (g + 0.5) / groups * n
        width = max(_SS, gap)
        if dots:
            r = width / 2
            for k in (-1, 1):
                p = (centre + k * (gap / 2 + r), n / 2)
                x, y = p if vertical else p[::-1]
                draw.ellipse([x - r, y - r, x + r, y + r], fill=1.0)
        else:
            length = 0.5 * n
            for k in (-1, 1):
                c = centre + k * (gap / 2 + width / 2)
                box = [c - width / 2, n / 2 - length / 2, c + width / 2, n / 2 + length / 2]
                draw.rectangle(box if vertical else [box[1], box[0], box[3], box[2]], fill=1.0)
    return _finish(img, size)


def vessel(rng: np.random.Generator, size: int) -> np.ndarray:
    """A branching tree of smooth curves whose width thins at each generation."""
    img, draw = _canvas(size)
    n = _SS * size
    # (x, y, heading, width, generation) of the branches still to grow
    stack = [(rng.uniform(0.3, 0.7) * n, 0.02 * n, np.pi / 2 + rng.normal(0, 0.2), 0.05 * n, 0)]
    level = _level(rng)
    while stack:
        x, y, heading, width, gen = stack.pop()
        steps = int(rng.integers(8, 16))
        for _ in range(steps):
            heading += rng.normal(0, 0.2)
            nx, ny = x + 0.025 * n * np.cos(heading), y + 0.025 * n * np.sin(heading)
            draw.line([x, y, nx, ny], fill=level, width=max(_SS, int(width)))
            r = width / 2  # round joints so the curve has no notches
            draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=level)
            x, y = nx, ny
        if gen < 3 and 0 < x < n and 0 < y < n:
            for turn in (-1, 1):
                stack.append((x, y, heading + turn * rng.uniform(0.3, 0.8), width * 0.7, gen + 1))
    return _finish(img, size)


def sensitivity(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dots of equal size on a grid, with concentrations graded by factors of two (a dilution series)."""
    img, draw = _canvas(size)
    n = _SS * size
    per_side = int(rng.integers(2, 4))
    levels = 0.5 ** np.arange(per_side * per_side)
    rng.shuffle(levels)
    pitch = n / per_side
    r = pitch * rng.uniform(0.15, 0.3)
    for idx, level in enumerate(levels):
        cx, cy = (idx % per_side + 0.5) * pitch, (idx // per_side + 0.5) * pitch
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=float(level))
    return _finish(img, size)


def mouse(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth body with organ blobs and a few hot spots (tracer accumulations), like an in-vivo scan."""
    img, draw = _canvas(size)
    n = _SS * size
    cx, cy = n / 2, n / 2
    rx, ry = n * rng.uniform(0.3, 0.42), n * rng.uniform(0.18, 0.3)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=0.1)  # the body's low background uptake
    for _ in range(int(rng.integers(2, 5))):  # organs
        ox, oy = cx + rng.uniform(-0.6, 0.6) * rx, cy + rng.uniform(-0.6, 0.6) * ry
        a, b = rx * rng.uniform(0.15, 0.35), ry * rng.uniform(0.2, 0.5)
        draw.ellipse([ox - a, oy - b, ox + a, oy + b], fill=rng.uniform(0.3, 0.6))
    hot, hot_draw = _canvas(size)
    for _ in range(int(rng.integers(1, 4))):  # hot spots: small, sharp-edged, the brightest
        hx, hy = cx + rng.uniform(-0.7, 0.7) * rx, cy + rng.uniform(-0.7, 0.7) * ry
        r = n * rng.uniform(0.015, 0.04)
        hot_draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=1.0)
    tissue = gaussian_filter(_downsample(img, size), sigma=0.03 * size)  # organs blend smoothly
    return _finish(np.maximum(tissue, _downsample(hot, size)), size)


def points(rng: np.random.Generator, size: int) -> np.ndarray:
    """Isolated point sources and thin lines, sized in pixels rather than in fractions of the image.

    What an MPI lab images to measure resolution (a point-source or capillary phantom). Every other category
    scales with the canvas, so at 128 px and more its smallest structures are several pixels wide; these
    stay 1–3 px on any canvas. The count grows with the area (about 8 dots per 64×64) so that a patch
    cropped from a large canvas still holds some.
    """
    img, draw = _canvas(size)
    n = _SS * size
    area = (size / 64) ** 2
    for _ in range(max(1, int(rng.integers(3, 13) * area))):
        r = _SS * rng.uniform(0.5, 1.5)  # 1–3 px diameter
        cx, cy = rng.uniform(0.05, 0.95, 2) * n
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_level(rng))
    for _ in range(int(rng.integers(0, 4) * max(1.0, area ** 0.5))):
        x0, y0, x1, y1 = rng.uniform(0.05, 0.95, 4) * n
        draw.line([x0, y0, x1, y1], fill=_level(rng), width=max(1, round(_SS * rng.uniform(1.0, 2.0))))
    return _finish(img, size)


def glyphs(font_path: str | Path, characters: str = string.digits + string.ascii_letters) -> Generator:
    """A generator drawing 1–3 random characters of `characters` with the TrueType font at `font_path`.

    The authors used Chinese characters and MNIST digits; point this at any .ttf/.otf (a CJK font with
    CJK `characters` reproduces their first set).
    """
    path = Path(font_path)
    if not path.is_file():
        raise FileNotFoundError(f"font file {path} not found (expected a TrueType/OpenType font)")
    if not characters:
        raise ValueError("glyphs: `characters` must not be empty")
    try:
        ImageFont.truetype(str(path), 12)  # fail now, not in a DataLoader worker, if it is not a font
    except OSError as err:
        raise ValueError(f"{path} is not a TrueType/OpenType font file ({err})") from None

    def draw_glyphs(rng: np.random.Generator, size: int) -> np.ndarray:
        img, draw = _canvas(size)
        n = _SS * size
        count = int(rng.integers(1, 4))
        font = ImageFont.truetype(str(path), int(n * rng.uniform(0.35, 0.7) / count ** 0.5))
        for _ in range(count):
            xy = rng.uniform(0.3, 0.7, 2) * n
            _text_blob(draw, tuple(xy), str(rng.choice(list(characters))), font, _level(rng))
        return _finish(img, size)

    return draw_glyphs


CATEGORIES: dict[str, Generator] = {
    "shape": shape,
    "resolution": resolution,
    "vessel": vessel,
    "sensitivity": sensitivity,
    "mouse": mouse,
    "points": points,
}
# The pool when a protocol names no categories: every category but `points`, which came after the Table 1
# test sets and the demo's pairs were fixed (adding it here would change them). Protocols opt in by name.
DEFAULT_CATEGORIES: tuple[str, ...] = ("shape", "resolution", "vessel", "sensitivity", "mouse")


def random_phantom(rng: np.random.Generator, size: int, categories=None) -> np.ndarray:
    """A phantom from a category drawn uniformly from `categories` (names in CATEGORIES, or generators)."""
    pool = list(DEFAULT_CATEGORIES) if categories is None else list(categories)
    if not pool:
        raise ValueError("random_phantom: no categories to draw from")
    choice = pool[int(rng.integers(len(pool)))]
    if isinstance(choice, str):
        if choice not in CATEGORIES:
            raise ValueError(f"unknown phantom category {choice!r}; expected one of {sorted(CATEGORIES)}")
        choice = CATEGORIES[choice]
    return choice(rng, size)
