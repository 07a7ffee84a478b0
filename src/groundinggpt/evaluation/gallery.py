"""Pictures of the worst and best answers per task, next to ``predictions.jsonl``.

``gallery_<task>.png``: the ``k`` lowest-scored samples (top row) and the ``k`` highest
(bottom row) of each task, drawn with the same panels as training's ``predictions.png``: for
boxes the padded square the model saw with the true (green) and predicted (red, dashed) box,
for spans and yes/no the question, the raw answer and the target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundinggpt.grounding.format import format_box

log = logging.getLogger(__name__)


def worst_and_best(
    rows: Sequence[Mapping[str, Any]], k: int = 4
) -> dict[str, tuple[list[Mapping], list[Mapping]]]:
    """Per task, the ``k`` lowest- and ``k`` highest-scored rows the model answered.

    Ties keep benchmark order; skipped samples (never answered) are left out; with fewer than
    ``2 k`` answers the two groups split them, so no sample appears twice.

    Example:
        >>> worst_and_best([{"task": "pope", "score": 1.0, "skipped": None, "index": 0}], 1)
        {'pope': ([{...}], [{...}])}  # doctest: +SKIP
    """
    by_task: dict[str, list[Mapping]] = {}
    for row in rows:
        if row.get("skipped") is None and row.get("output") is not None:
            by_task.setdefault(row["task"], []).append(row)
    out = {}
    for task, answered in by_task.items():
        ranked = sorted(answered, key=lambda r: (r["score"], r["index"]))
        worst = ranked[: min(k, (len(ranked) + 1) // 2)]  # no sample shown twice
        best = sorted(ranked[len(worst) :], key=lambda r: (-r["score"], r["index"]))[:k]
        out[task] = (worst, best)
    return out


def _panel(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``plot_predictions`` sample for one prediction row."""
    sample = {
        "task": row["task"],
        "prompt": f"[score {row['score']:.2f}] {row['prompt']}",
        "output": row["output"],
        "reference": str(row["target"]),
    }
    image_path = row.get("media", {}).get("image")
    if image_path:
        try:
            from groundinggpt.data.media import expand_to_square, open_rgb
            from groundinggpt.grounding.geometry import box_to_padded

            image = open_rgb(image_path)
            if row["task"] in ("rec", "sl") and row["target"] is not None:
                boxes = row["target"] if isinstance(row["target"][0], list) else [row["target"]]
                sample["reference"] = format_box(box_to_padded(boxes[0], *image.size))
            sample["image"] = np.asarray(expand_to_square(image))
        except Exception as err:  # a picture must never fail an evaluation
            log.warning("gallery: could not load %s: %s", image_path, err)
    return sample


def write_gallery(output_dir: str | Path, rows: Sequence[Mapping[str, Any]], k: int = 4):
    """Write ``gallery_<task>.png`` per task into ``output_dir``; returns the paths."""
    from groundinggpt.utils.visualize import plot_predictions

    paths = []
    for task, (worst, best) in worst_and_best(rows, k).items():
        path = Path(output_dir) / f"gallery_{task}.png"
        panels = [_panel(r) for r in worst] + [_panel(r) for r in best]
        plot_predictions(panels, path, ncols=max(len(worst), 1))
        paths.append(path)
    return paths
