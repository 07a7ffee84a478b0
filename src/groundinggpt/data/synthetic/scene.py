"""Scenes of coloured shapes: the small visual vocabulary shared by synthetic images and videos.

A scene is a canvas size plus a list of `Shape`s. Shapes are drawn without anti-aliasing so
every shape pixel has exactly its palette colour before noise, and each shape's box is the
tight box of the pixels actually drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (50, 170, 70),
    "blue": (45, 85, 220),
    "yellow": (235, 205, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Each shape type sounds at its own pitch, far apart on the mel scale.
TONE_HZ: dict[str, float] = {"circle": 300.0, "square": 1200.0, "triangle": 4000.0}
PITCH_WORDS: dict[str, str] = {"circle": "low", "square": "medium", "triangle": "high"}

_GAP = 2  # pixels kept free between shapes so tight boxes never touch


@dataclass(frozen=True)
class Shape:
    """One filled shape: colour and kind, and its square placement ``(x, y, side)`` in pixels."""

    color: str
    kind: str
    x: int
    y: int
    side: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"

    def mask(self, width: int, height: int) -> np.ndarray:
        """Boolean ``(H, W)`` mask of the pixels this shape covers."""
        img = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(img)
        x0, y0, x1, y1 = self.x, self.y, self.x + self.side - 1, self.y + self.side - 1
        if self.kind == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=255)
        elif self.kind == "square":
            draw.rectangle((x0, y0, x1, y1), fill=255)
        elif self.kind == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=255)
        else:
            raise ValueError(f"unknown shape kind {self.kind!r}")
        return np.asarray(img) > 0


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)``, ends exclusive, of the True pixels of a mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask has no box")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _overlaps(a: Shape, b: Shape) -> bool:
    return not (
        a.x + a.side + _GAP <= b.x
        or b.x + b.side + _GAP <= a.x
        or a.y + a.side + _GAP <= b.y
        or b.y + b.side + _GAP <= a.y
    )


def _side_range(width: int, height: int, lo: float, hi: float) -> tuple[int, int]:
    short = min(width, height)
    return math.ceil(lo * short), max(math.ceil(lo * short), math.floor(hi * short))


def place_shapes(
    rng: np.random.Generator,
    width: int,
    height: int,
    kinds: list[tuple[str, str]],
    side_frac: tuple[float, float] = (0.25, 0.5),
    fixed: tuple[Shape, ...] = (),
) -> list[Shape]:
    """Place shapes ``(colour, kind)`` at random, not overlapping each other nor ``fixed``.

    Sides are drawn from ``side_frac`` of the shorter canvas side; when a layout does not fit,
    the whole layout is redrawn with sides shrinking towards the minimum.
    """
    lo, hi = _side_range(width, height, *side_frac)
    for attempt in range(200):
        top = hi - (hi - lo) * min(attempt, 20) // 20  # shrink gradually after failures
        placed: list[Shape] = []
        for color, kind in kinds:
            side = int(rng.integers(lo, top + 1))
            for _ in range(50):
                cand = Shape(
                    color,
                    kind,
                    int(rng.integers(0, width - side + 1)),
                    int(rng.integers(0, height - side + 1)),
                    side,
                )
                if not any(_overlaps(cand, s) for s in (*fixed, *placed)):
                    placed.append(cand)
                    break
            else:
                break
        if len(placed) == len(kinds):
            return placed
    raise RuntimeError(f"could not place {len(kinds)} shapes on a {width}x{height} canvas")


def distinct_objects(
    rng: np.random.Generator, n: int, distinct_kinds: bool = False
) -> list[tuple[str, str]]:
    """``n`` different ``(colour, kind)`` pairs; with ``distinct_kinds`` no kind repeats."""
    if distinct_kinds:
        kinds = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
        return [(str(rng.choice(list(COLORS))), k) for k in kinds]
    pairs = [(c, k) for c in COLORS for k in SHAPES]
    return [pairs[i] for i in rng.permutation(len(pairs))[:n]]


def background(
    rng: np.random.Generator, width: int, height: int, noise_std: float = 4.0
) -> np.ndarray:
    """A light, slightly tinted plain background with mild noise: uint8 ``(H, W, 3)``."""
    base = rng.integers(175, 236) + rng.integers(-12, 13, size=3)
    noise = rng.normal(0.0, noise_std, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def paint(canvas: np.ndarray, shape: Shape) -> tuple[int, int, int, int]:
    """Paint a shape onto an ``(H, W, 3)`` canvas in place; returns its tight pixel box."""
    mask = shape.mask(canvas.shape[1], canvas.shape[0])
    canvas[mask] = COLORS[shape.color]
    return tight_box(mask)


def left_to_right(objects: list[Shape]) -> list[int]:
    """Object indices by the horizontal centre (then top edge): the order captions name them."""
    return sorted(
        range(len(objects)), key=lambda i: (objects[i].x + objects[i].side / 2, objects[i].y)
    )


def describe(
    objects: list[Shape], labels: list[str] | None = None, order: list[int] | None = None
) -> str:
    """``"a red circle, a green square and a blue triangle."``, objects left to right.

    ``labels`` (one per object, e.g. its box text) follow each object's name; ``order`` (object
    indices) names them in another order.
    """
    tags = labels or [""] * len(objects)
    if order is None:
        order = left_to_right(objects)
    names = [f"a {objects[i].name}" + (f" {tags[i]}" if tags[i] else "") for i in order]
    if len(names) == 1:
        return names[0] + "."
    return ", ".join(names[:-1]) + " and " + names[-1] + "."
