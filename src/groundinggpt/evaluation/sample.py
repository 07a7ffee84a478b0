"""One scored benchmark item, shared by every benchmark reader (no reader imports another)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groundinggpt.grounding.format import format_box, format_span
from groundinggpt.grounding.geometry import box_to_padded
from groundinggpt.modalities import SEG_TOKEN

SEG_ANSWER = f"It is {SEG_TOKEN}."  # GLaMM's ANSWER_LIST[0] (groundingLMM dataset/utils/utils.py)
MASK_TASKS = ("res", "gcg", "avs")  # targets are masks, one per [SEG] of the reference


@dataclass
class BenchmarkSample:
    """One scored item of a benchmark.

    Args:
        id: unique within the benchmark (REC: ``f"{ref_id}_{sent_id}"``, one per expression).
        task: ``"rec"``, ``"vtg"``, ``"pope"``, ``"sl"``, or the mask tasks ``"res"``,
            ``"gcg"``, ``"avs"``.
        media: record key -> absolute path (``{"image": p}``, ``{"video": p}``,
            ``{"image": p, "sound": p}``).
        question: the human turn with its placeholders (``"<image>\\n..."``).
        target: ``rec``/``sl``: ``[x0, y0, x1, y1]`` pixels of the original image;
            ``vtg``: ``[start_s, end_s]``; ``pope``: ``"yes"``/``"no"``; ``res``: the COCO
            segmentation (polygons or RLE); ``gcg``: ``[{"phrase", "segmentation"}, ...]`` in
            caption order; ``avs``: the ground-truth mask PNG's path. ``None`` until
            `complete_meta` when it needs the image size (VGGSS, some synthetic records).
        meta: ``width``/``height`` (rec, sl, res, gcg, avs), ``duration`` (vtg), ``category``
            (pope), ``caption`` and ``spans`` (gcg), ...

    Example:
        >>> s = BenchmarkSample("0_0", "rec", {"image": "/d/a.jpg"}, "<image>\\nOutput the "
        ...     "coordinate of the dog.", [10, 0, 30, 20], {"width": 40, "height": 20})
        >>> s.reference()
        '[0.250, 0.250, 0.750, 0.750]'
    """

    id: str
    task: str
    media: dict[str, str]
    question: str
    target: Any
    meta: dict = field(default_factory=dict)

    def reference(self) -> str:
        """The target as answer text in the format of docs/architecture.md (needs complete meta)."""
        if self.target is None:
            raise ValueError(f"sample {self.id}: no target yet, call complete_meta first")
        if self.task in ("rec", "sl"):
            w, h = _size(self)
            return format_box(box_to_padded(self.target, w, h))
        if self.task == "vtg":
            d = _duration(self)
            return format_span((self.target[0] / d, self.target[1] / d))
        if self.task == "pope":
            return "Yes." if self.target == "yes" else "No."
        if self.task in ("res", "avs"):
            return SEG_ANSWER
        if self.task == "gcg":
            return tag_phrases(self.meta.get("caption"), self.meta.get("spans"), self.id)
        raise ValueError(f"sample {self.id}: unknown task {self.task!r}")

    def segmentations(self) -> list:
        """The target masks as COCO segmentations, one per ``[SEG]`` of `reference`.

        ``res``: ``[target]``; ``gcg``: one per phrase, in caption order; ``avs``: the mask
        PNG read (nonzero = foreground) and encoded as compressed RLE. Other tasks: ``[]``.

        Example:
            >>> BenchmarkSample("1", "res", {}, "q", [[0, 0, 2, 0, 2, 2]]).segmentations()
            [[[0, 0, 2, 0, 2, 2]]]
        """
        if self.task == "res":
            return [self.target]
        if self.task == "gcg":
            return [t["segmentation"] for t in self.target]
        if self.task == "avs":
            from groundinggpt.grounding.masks import encode_mask

            return [encode_mask(read_mask_png(self.target))]
        return []

    def to_record(self) -> dict:
        """The released record format that `ConversationDataset` reads (absolute paths).

        Mask tasks add ``masks`` (`segmentations`), so that the dataset gives SAM's view of
        the image (the ``segment`` processor) beside the prompt.
        """
        record = {"id": self.id, "task": self.task, **self.media, "meta": dict(self.meta)}
        record["conversations"] = [
            {"from": "human", "value": self.question},
            {"from": "gpt", "value": self.reference()},
        ]
        if self.task in MASK_TASKS:
            record["masks"] = self.segmentations()
        return record


def tag_phrases(caption: str | None, spans: Any, sample_id: str = "?") -> str:
    """The caption with each grounded span as ``<p>phrase</p> [SEG]`` (the GCG answer text).

    Args:
        caption: the reference caption.
        spans: ``[[start, end], ...]`` character spans of the grounded phrases, in caption
            order, not overlapping.
        sample_id: for the message when caption or spans are missing.

    Example:
        >>> tag_phrases("A man rides a horse.", [[0, 5], [12, 19]])
        '<p>A man</p> [SEG] rides <p>a horse</p> [SEG].'
    """
    if not isinstance(caption, str) or spans is None:
        raise ValueError(f"sample {sample_id}: gcg reference needs meta 'caption' and 'spans'")
    out, cursor = [], 0
    for start, end in spans:
        out += [caption[cursor:start], f"<p>{caption[start:end]}</p> {SEG_TOKEN}"]
        cursor = end
    return "".join(out) + caption[cursor:]


def read_mask_png(path: str) -> np.ndarray:
    """A ground-truth mask PNG (AVSBench) as a ``(H, W)`` bool array: nonzero = foreground.

    Grey (S4: 255 on the object) and palette (MS3: index 1) PNGs both work; an RGB(A) mask
    counts a pixel when any channel is nonzero.

    Raises:
        MediaError: the file is missing or unreadable.

    Example:
        >>> read_mask_png("gt_masks/test/dog/abc/abc_1.png").shape  # doctest: +SKIP
        (224, 224)
    """
    from PIL import Image

    from groundinggpt.data.media import media_errors

    with media_errors(path, "image"), Image.open(path) as img:
        array = np.asarray(img)
    return array.any(axis=-1) if array.ndim == 3 else array != 0


def _size(sample: BenchmarkSample) -> tuple[int, int]:
    w, h = sample.meta.get("width"), sample.meta.get("height")
    if w is None or h is None:
        raise ValueError(f"sample {sample.id}: image size unknown, call complete_meta first")
    return int(w), int(h)


def _duration(sample: BenchmarkSample) -> float:
    d = sample.meta.get("duration")
    if d is None or not d > 0:
        raise ValueError(f"sample {sample.id}: video duration unknown, call complete_meta first")
    return float(d)


# ---------------------------------------------------------------------------- complete_meta
