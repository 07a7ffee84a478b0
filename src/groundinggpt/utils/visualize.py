"""Pictures of predictions: boxes and masks on images, spans on a timeline, answers as text.

Figures are drawn on a bare `matplotlib.figure.Figure` (Agg canvas), never through pyplot, so
nothing opens a window and the caller's matplotlib backend is left alone.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from matplotlib.patches import Rectangle

from groundinggpt.grounding.format import (
    box_iou,
    parse_box,
    parse_span,
    parse_yes_no,
    span_iou,
)

TRUE_COLOR = "limegreen"
PRED_COLOR = "red"
MAX_FRAMES = 4
_PANEL_INCHES = 3.6
_TEXT_WIDTH = 44


def _check_image(image: Any, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ValueError(f"{what} must be an HxW or HxWx3 array, got shape {arr.shape}")
    return arr


def _short(text: Any, lines: int = 3) -> str:
    """Wrapped and truncated text for a panel caption."""
    wrapped = textwrap.wrap(str(text or "").replace("\n", " "), _TEXT_WIDTH) or [""]
    if len(wrapped) > lines:
        wrapped = [*wrapped[: lines - 1], wrapped[lines - 1][: _TEXT_WIDTH - 3] + "..."]
    return "\n".join(wrapped)


def _caption(sample: dict) -> str:
    return "\n".join(
        f"{label}: {_short(sample.get(key), 2)}"
        for label, key in (("Q", "prompt"), ("A", "output"), ("ref", "reference"))
    )


def _box_patch(box: Sequence[float], w: int, h: int, color: str, dashed: bool) -> Rectangle:
    x0, y0, x1, y1 = box
    return Rectangle(
        (x0 * w, y0 * h),
        (x1 - x0) * w,
        (y1 - y0) * h,
        fill=False,
        edgecolor=color,
        linewidth=2,
        linestyle="--" if dashed else "-",
    )


def _draw_box_panel(fig: Figure, spec: SubplotSpec, sample: dict) -> None:
    """rec / sl: the true box (green, solid) and the predicted box (red, dashed) on the image."""
    ax = fig.add_subplot(spec)
    image = sample.get("image")
    if image is not None:
        arr = _check_image(image, "image")
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
        h, w = arr.shape[:2]
    else:  # no image: draw in the unit square, y pointing down like an image
        h = w = 1
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_aspect("equal")
    true, pred = parse_box(sample.get("reference", "")), parse_box(sample.get("output", ""))
    if true is not None:
        ax.add_patch(_box_patch(true, w, h, TRUE_COLOR, dashed=False))
    if pred is not None:
        ax.add_patch(_box_patch(pred, w, h, PRED_COLOR, dashed=True))
    _finish(ax, sample, _iou_title(sample["task"], true, pred, box_iou))


def _iou_title(task: str, true: Any, pred: Any, iou_fn) -> str:
    if pred is None:
        return f"{task}: no prediction"
    if true is None:
        return f"{task}: no reference"
    return f"{task}: IoU {iou_fn(true, pred):.2f}"


def _finish(ax: Axes, sample: dict, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(_caption(sample), fontsize=7, loc="left")


def _draw_frames(fig: Figure, spec: SubplotSpec, frames: Sequence[Any]) -> None:
    """A strip of up to `MAX_FRAMES` frames, picked uniformly."""
    idx = np.linspace(0, len(frames) - 1, min(len(frames), MAX_FRAMES)).round().astype(int)
    strip = spec.subgridspec(1, len(idx), wspace=0.05)
    for j, i in enumerate(idx):
        ax = fig.add_subplot(strip[0, j])
        arr = _check_image(frames[i], f"frame {i}")
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
        ax.axis("off")


def _draw_span_panel(fig: Figure, spec: SubplotSpec, sample: dict) -> None:
    """vtg: true and predicted spans as two bars on a [0, 1] timeline, frames above it."""
    # Same layout with or without frames, so timelines line up across panels.
    inner = spec.subgridspec(2, 1, height_ratios=(2, 1), hspace=0.05)
    frames = sample.get("frames")
    if frames is not None and len(frames):
        _draw_frames(fig, inner[0], frames)
    ax = fig.add_subplot(inner[1])
    true, pred = parse_span(sample.get("reference", "")), parse_span(sample.get("output", ""))
    for y, span, color, label in ((1, true, TRUE_COLOR, "true"), (0, pred, PRED_COLOR, "pred")):
        if span is not None:
            ax.barh(y, span[1] - span[0], left=span[0], height=0.6, color=color)
        else:
            ax.text(0.5, y, "no prediction" if label == "pred" else "no reference", ha="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, 1.6)
    _finish(ax, sample, _iou_title(sample["task"], true, pred, span_iou))
    ax.set_yticks([0, 1], ["pred", "true"], fontsize=7)
    ax.set_xticks([0, 0.5, 1])
    ax.tick_params(labelsize=7)


def _draw_text_panel(fig: Figure, spec: SubplotSpec, sample: dict) -> None:
    """pope and anything else: the image (if any) and the answer as text."""
    ax = fig.add_subplot(spec)
    image = sample.get("image")
    if image is not None:
        arr = _check_image(image, "image")
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
    task = str(sample.get("task"))
    title = task
    if task == "pope":
        pred, true = (
            parse_yes_no(sample.get("output", "")),
            parse_yes_no(sample.get("reference", "")),
        )
        if pred is None:
            title = "pope: no prediction"
        else:
            title = f"pope: {'correct' if pred == true else 'wrong'}"
    _finish(ax, sample, title)


def plot_predictions(samples: Sequence[dict], path: str | Path, ncols: int = 4) -> Path:
    """Save a grid of prediction panels as a PNG and return its path.

    Args:
        samples: dicts with ``task`` ("rec", "sl", "vtg", "pope" or other), ``image`` (HxWx3
            uint8 or None; for rec/sl the padded square the model saw), optional ``frames``
            (list of HxWx3 uint8, vtg), ``prompt``, ``output`` and ``reference`` text.
        path: where to write the PNG; parent folders are created.
        ncols: panels per row.

    Example:
        >>> plot_predictions([{"task": "vtg", "output": "{0.1, 0.5}", "reference": "{0.2, 0.6}"}],
        ...                  "/tmp/preds.png")  # doctest: +SKIP
    """
    if not samples:
        raise ValueError("plot_predictions needs at least one sample")
    n = len(samples)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(_PANEL_INCHES * ncols, (_PANEL_INCHES + 1.2) * nrows))
    grid = fig.add_gridspec(nrows, ncols, hspace=0.6, wspace=0.25)
    for k, sample in enumerate(samples):
        task = sample.get("task")
        draw = {"rec": _draw_box_panel, "sl": _draw_box_panel, "vtg": _draw_span_panel}.get(
            task, _draw_text_panel
        )
        draw(fig, grid[k // ncols, k % ncols], sample)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80, bbox_inches="tight")
    return path


# ------------------------------------------------------------------------------ infer.py answers


def draw_boxes(
    image: Any, boxes: Sequence[Sequence[float]], color: tuple[int, int, int] = (255, 0, 0)
) -> Any:
    """A copy of ``image`` (PIL) with ``boxes`` in pixels ``(x0, y0, x1, y1)`` outlined.

    The outline is drawn at the boxes' own pixel coordinates (no resizing), so a box drawn
    here lies exactly where its numbers say; the width grows with the image so it stays
    visible on large photos.

    Args:
        image: a PIL image (any mode; converted to RGB).
        boxes: pixel boxes of the original image.
        color: outline colour.

    Example:
        >>> draw_boxes(Image.open("cat.jpg"), [(10, 20, 110, 90)]).save("cat_box.png")  # doctest: +SKIP
    """
    from PIL import ImageDraw

    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 150))
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=color, width=width)
        draw.text((x0 + width + 1, y0 + width), str(k + 1), fill=color)
    return out


# Mask overlay colours (matplotlib's tab10), one per mask in answer order.
MASK_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))  # fmt: skip


def draw_masks(
    image: Any, masks: Sequence[Any], labels: Sequence[str] = (), alpha: float = 0.45
) -> Any:
    """A copy of ``image`` (PIL) with each mask as a translucent colour, labelled.

    Mask ``k`` (an ``(H, W)`` bool array of the image's own size, nonzero = inside) is blended
    in colour ``MASK_COLORS[k % 10]`` with weight ``alpha``; its label (``labels[k]``, else
    ``"[SEG] k+1"``) is written in that colour at the mask's top-left corner. An empty mask
    gets its label at the image's top-left, so every mask of the answer shows.

    Raises:
        ValueError: a mask is not 2-D or differs from the image in size.

    Example:
        >>> draw_masks(Image.open("cat.jpg"), [mask], ["the cat"]).save("cat_mask.png")  # doctest: +SKIP
    """
    from PIL import Image, ImageDraw

    out = np.asarray(image.convert("RGB")).astype(np.float32)
    corners = []
    for k, mask in enumerate(masks):
        m = np.asarray(mask) != 0
        if m.shape != out.shape[:2]:
            raise ValueError(f"mask {k} has shape {m.shape}, the image is {out.shape[:2]}")
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(MASK_COLORS[k % len(MASK_COLORS)])
        ys, xs = np.nonzero(m)
        corners.append((int(xs.min()), int(ys.min())) if len(xs) else (0, 0))
    picture = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for k, (x, y) in enumerate(corners):
        label = labels[k] if k < len(labels) and labels[k] else f"[SEG] {k + 1}"
        draw.text((x + 2, y + 2 + 12 * (corners[:k].count((x, y)))), label,
                  fill=MASK_COLORS[k % len(MASK_COLORS)])  # fmt: skip
    return picture


def caption_image(image: Any, text: str, note: str = "") -> Any:
    """A copy of ``image`` (PIL) with a band below it holding ``text`` and, in red, ``note``.

    Used to write the model's raw answer under the picture of its grounding, and to say when
    nothing could be parsed from it (so a picture without boxes is never mistaken for "the
    model found nothing").

    Example:
        >>> caption_image(img, "[.00, 0.530, 0.4300]", "no box could be parsed").save("a.png")  # doctest: +SKIP
    """
    from PIL import Image, ImageDraw

    image = image.convert("RGB")
    text = "".join(c for c in str(text) if c.isprintable())
    width_chars = max(20, image.width // 7)
    text_lines = textwrap.wrap(f"answer: {text}", width_chars)[:4] or ["answer: (empty)"]
    note_lines = textwrap.wrap(note, width_chars)[:3]
    lines = [(line, (0, 0, 0)) for line in text_lines] + [(n, (200, 0, 0)) for n in note_lines]
    out = Image.new("RGB", (image.width, image.height + 14 * len(lines) + 8), (255, 255, 255))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (line, color) in enumerate(lines):
        draw.text((4, image.height + 4 + 14 * k), line, fill=color)
    return out


def plot_timeline(
    path: str | Path,
    duration: float,
    spans: Sequence[Sequence[float]],
    frames: Sequence[Any] = (),
    frame_times: Sequence[float] = (),
    title: str = "",
    note: str = "",
) -> Path:
    """Save a picture of time spans (seconds) on a ``[0, duration]`` timeline, frames above it.

    Args:
        path: where to write the PNG.
        duration: length of the video/sound in seconds.
        spans: ``(start_s, end_s)`` per predicted span, drawn as red bars.
        frames: a few HxWx3 uint8 frames, shown above the timeline at their times.
        frame_times: the time (s) of each frame, marked on the timeline.
        title: text above the figure (the answer).
        note: a warning under the title in red (e.g. that no span could be parsed).

    Example:
        >>> plot_timeline("answer.png", 12.0, [(2.5, 6.0)], frames, [1.5, 4.5, 7.5, 10.5])
    """
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    n = len(frames)
    fig = Figure(figsize=(max(6.0, 2.0 * n), 3.2 if n else 1.6))
    grid = fig.add_gridspec(2 if n else 1, max(n, 1), height_ratios=(2, 1) if n else None)
    for j, frame in enumerate(frames):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(_check_image(frame, f"frame {j}"))
        ax.set_title(f"{frame_times[j]:.1f} s" if j < len(frame_times) else "", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[-1, :])
    for start, end in spans:
        ax.barh(0, end - start, left=start, height=0.6, color=PRED_COLOR)
    for t in frame_times:
        ax.axvline(t, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xlim(0, duration)
    ax.set_ylim(-0.6, 0.6)
    ax.set_yticks([])
    ax.set_xlabel("seconds", fontsize=8)
    ax.tick_params(labelsize=7)
    title = "".join(c for c in title if c.isprintable())  # raw model output may hold control bytes
    if title:
        fig.suptitle(_short(title, 2), fontsize=9)
    if note:
        ax.set_title(note, fontsize=8, color="red")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80, bbox_inches="tight")
    return path


# Headline metric per task, drawn in the learning-curve picture.
CURVE_METRICS = ("rec/acc@0.5", "sl/acc@0.5", "vtg/r1@0.5", "vtg/r1@0.7", "pope/accuracy")


def plot_curves(
    history: Sequence[dict[str, float]],
    baselines: dict[str, float],
    path: str | Path,
    split: str = "val",
    boundaries: Sequence[tuple[float, str]] = (),
) -> Path | None:
    """Each task's headline metric vs optimizer step, its trivial baseline as a dashed line.

    Args:
        history: one ``{"step": s, "val/rec/acc@0.5": v, ...}`` per validation run.
        baselines: ``{"baseline/val/rec/acc@0.5": b, ...}`` (as in metrics.json).
        path: the picture to write.
        boundaries: ``(step, label)`` where a new training stage starts (a dotted line).

    Returns:
        ``path``, or None when ``history`` holds none of the metrics.

    Example:
        >>> plot_curves([{"step": 10, "val/rec/acc@0.5": 0.2}], {}, "curves.png")
    """
    names = [m for m in CURVE_METRICS if any(f"{split}/{m}" in h for h in history)]
    if not names:
        return None
    fig = Figure(figsize=(3.2 * len(names), 3.0), layout="constrained")
    for i, name in enumerate(names):
        ax: Axes = fig.add_subplot(1, len(names), i + 1)
        points = [(h["step"], h[f"{split}/{name}"]) for h in history if f"{split}/{name}" in h]
        ax.plot(*zip(*points, strict=True), marker="o", label="model")
        base = baselines.get(f"baseline/{split}/{name}")
        if base is not None:
            ax.axhline(base, color="gray", linestyle="--", label="baseline")
        for step, label in boundaries:
            ax.axvline(step, color="black", linestyle=":", linewidth=0.8)
            ax.text(step, 0.98, f" {label}", fontsize=6, va="top", rotation=90)
        ax.set_title(f"{split}/{name}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path
