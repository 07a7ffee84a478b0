"""Box geometry of padded-square images: original pixels <-> the fractions the model writes.

Images are padded to a square (centred, mean colour) before the encoder sees them, so a box in
the answer text is a fraction of that square; these turn it into pixels of the original image
and back.

Example:
    >>> box_to_padded((0, 0, 50, 100), 50, 100)  # a 50 x 100 image sits at x 25..75 of 100
    (0.25, 0.0, 0.75, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence


def pad_offsets(w: int, h: int) -> tuple[int, int, int]:
    """Where a ``w x h`` image sits inside its padded square: ``(dx, dy, side)``."""
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    side = max(w, h)
    return (side - w) // 2, (side - h) // 2, side


def box_to_padded(box: Sequence[float], w: int, h: int) -> tuple[float, float, float, float]:
    """Pixel box ``(x0, y0, x1, y1)`` in a ``w x h`` image -> box relative to the padded square."""
    dx, dy, side = pad_offsets(w, h)
    x0, y0, x1, y1 = (float(v) for v in box)
    return ((x0 + dx) / side, (y0 + dy) / side, (x1 + dx) / side, (y1 + dy) / side)


def box_from_padded(
    rel_box: Sequence[float], w: int, h: int, clip: bool = True
) -> tuple[float, float, float, float]:
    """Box relative to the padded square -> pixel box in the original ``w x h`` image.

    With ``clip`` the box is clipped to the image: a prediction reaching into the padding
    covers no more of the image than its visible part.
    """
    dx, dy, side = pad_offsets(w, h)
    x0, y0, x1, y1 = (float(v) * side for v in rel_box)
    box = (x0 - dx, y0 - dy, x1 - dx, y1 - dy)
    if clip:
        box = (
            min(max(box[0], 0.0), w),
            min(max(box[1], 0.0), h),
            min(max(box[2], 0.0), w),
            min(max(box[3], 0.0), h),
        )
    return box


__all__ = ["box_from_padded", "box_to_padded", "pad_offsets"]
