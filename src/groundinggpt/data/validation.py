"""Checks that a record can become a training sample, each failure with a countable reason.

The grounding text format (DESIGN.md) is checked strictly on training data, unlike the
tolerant parser used on model output: a reversed, out-of-range or NaN box in a *target*
would teach the model wrong coordinates, so such a record is skipped (or raises in strict
mode) rather than silently clipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from groundinggpt.data.records import SampleError

# Record keys that never hold media (ids are sometimes file names).
_NOT_MEDIA = {"id", "conversations", "task", "meta"}
_MEDIA_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".flv", ".m4v",
    ".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac",
)  # fmt: skip
# Modality placeholders someone might write that this project does not know.
_PLACEHOLDER = re.compile(r"<(image|video|sound|audio|depth|thermal|imu|point|speech)>")
# One number, with no two ways to match the same digits (``[0-9]+\.?[0-9]*`` had one for every
# split of a digit run, which made a failed match on a long run quadratic).
_NUM = re.compile(
    r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|nan|inf)", re.IGNORECASE
)
_GROUPS = {
    "box": (re.compile(r"\[([^\[\]]*)\]"), 4),
    "span": (re.compile(r"\{([^{}]*)\}"), 2),
}


def _is_numeric(content: str) -> bool:
    """Whether a bracket group is a comma-separated list of >= 2 numbers (meant as coordinates).

    Split at commas, then one anchored match per item: linear in ``len(content)``.

    Example:
        >>> _is_numeric(" 0.1, 2e-3 ,NaN"), _is_numeric("sic"), _is_numeric("0.5")
        (True, False, False)
    """
    items = content.split(",")
    return len(items) >= 2 and all(_NUM.fullmatch(item.strip()) for item in items)


def check_conversations(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The record's human/gpt turns; `SampleError` if absent, malformed or an answer is empty."""
    convs = record.get("conversations")
    if not convs:
        raise SampleError("no_conversation", "record has no conversations")
    if not isinstance(convs, list) or len(convs) < 2:
        raise SampleError("no_conversation", "record needs at least one human and one gpt turn")
    for i, turn in enumerate(convs):
        if not isinstance(turn, Mapping) or not isinstance(turn.get("value"), str):
            raise SampleError("malformed_record", f"turn {i} has no text value")
        expected = "human" if i % 2 == 0 else "gpt"
        if turn.get("from") != expected:
            raise SampleError(
                "malformed_record", f"turn {i} is from {turn.get('from')!r}, expected {expected}"
            )
        if expected == "gpt" and not turn["value"].strip():
            raise SampleError("empty_answer", f"answer in turn {i} is empty")
    return convs


def check_modalities(
    record: Mapping[str, Any], record_keys: Collection[str], placeholders: Collection[str]
) -> None:
    """`SampleError` if the record carries media or placeholders of an unknown modality
    (``unknown_modality``), or a placeholder in an answer (``placeholder_in_answer``).

    Args:
        record: the record.
        record_keys: media keys this dataset understands (``image``, ``video``, ``sound``).
        placeholders: the placeholders those keys go with (``<image>``...).
    """
    for key, value in record.items():
        if key in record_keys or key in _NOT_MEDIA:
            continue
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and v.lower().endswith(_MEDIA_SUFFIXES) for v in values):
            raise SampleError("unknown_modality", f"media key {key!r} is not a known modality")
    for i, turn in enumerate(record["conversations"]):
        if i % 2 == 1:  # media are spliced into prompts only: in an answer it is a data bug
            found = [p for p in placeholders if p in turn["value"]]
            found += [m.group(0) for m in _PLACEHOLDER.finditer(turn["value"])]
            if found:
                raise SampleError(
                    "placeholder_in_answer", f"answer in turn {i} contains {found[0]}"
                )
            continue
        for match in _PLACEHOLDER.finditer(turn["value"]):
            if match.group(0) not in placeholders:
                raise SampleError("unknown_modality", f"placeholder {match.group(0)} is unknown")


def _check_group(kind: str, content: str, n: int) -> None:
    values = [float(v) for v in content.split(",")]
    if len(content) > 80:  # keep log lines short when a group is huge
        content = content[:80] + "..."
    if len(values) != n:
        raise SampleError(f"{kind}_malformed", f"{kind} needs {n} values, got [{content}]")
    if not all(math.isfinite(v) for v in values):
        raise SampleError(f"{kind}_not_finite", f"{kind} [{content}] is not finite")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise SampleError(f"{kind}_out_of_range", f"{kind} [{content}] is outside [0, 1]")
    if kind == "box" and (values[2] < values[0] or values[3] < values[1]):
        raise SampleError("box_reversed", f"box [{content}] has x1 < x0 or y1 < y0")
    if kind == "span" and values[1] < values[0]:
        raise SampleError("span_end_before_start", f"span {{{content}}} ends before it starts")


def check_grounding_text(text: str) -> None:
    """`SampleError` for any box ``[x0, y0, x1, y1]`` or span ``{s, e}`` in ``text`` that is
    not 4 (2) finite values in [0, 1] with ``x0 <= x1, y0 <= y1`` (``s <= e``).

    Groups that are not lists of numbers (``[sic]``, ``{name}``) are ordinary text.

    Example:
        >>> check_grounding_text("the dog [0.1, 0.2, 0.5, 0.6] runs {0.10, 0.40}")
        >>> check_grounding_text("[0.5, 0.2, 0.1, 0.6]")
        Traceback (most recent call last):
        ...
        groundinggpt.data.records.SampleError: box [0.5, 0.2, 0.1, 0.6] has x1 < x0 or y1 < y0
    """
    for kind, (pattern, n) in _GROUPS.items():
        for match in pattern.finditer(text):
            if _is_numeric(match.group(1)):
                _check_group(kind, match.group(1), n)
