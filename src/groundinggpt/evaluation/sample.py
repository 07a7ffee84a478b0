"""One scored benchmark item, shared by every benchmark reader (no reader imports another)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from groundinggpt.grounding.format import format_box, format_span
from groundinggpt.grounding.geometry import box_to_padded


@dataclass
class BenchmarkSample:
    """One scored item of a benchmark.

    Args:
        id: unique within the benchmark (REC: ``f"{ref_id}_{sent_id}"``, one per expression).
        task: ``"rec"``, ``"vtg"``, ``"pope"`` or ``"sl"``.
        media: record key -> absolute path (``{"image": p}``, ``{"video": p}``,
            ``{"image": p, "sound": p}``).
        question: the human turn with its placeholders (``"<image>\\n..."``).
        target: ``rec``/``sl``: ``[x0, y0, x1, y1]`` pixels of the original image;
            ``vtg``: ``[start_s, end_s]``; ``pope``: ``"yes"``/``"no"``. ``None`` until
            `complete_meta` when it needs the image size (VGGSS, some synthetic records).
        meta: ``width``/``height`` (rec, sl), ``duration`` (vtg), ``category`` (pope), ...

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
        raise ValueError(f"sample {self.id}: unknown task {self.task!r}")

    def to_record(self) -> dict:
        """The released record format that `ConversationDataset` reads (absolute paths)."""
        record = {"id": self.id, "task": self.task, **self.media, "meta": dict(self.meta)}
        record["conversations"] = [
            {"from": "human", "value": self.question},
            {"from": "gpt", "value": self.reference()},
        ]
        return record


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
