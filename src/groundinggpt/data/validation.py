"""Checks that a record can become a training sample, each failure with a countable reason.

The grounding text format (docs/architecture.md) is checked strictly on training data, unlike the
tolerant parser used on model output: a reversed, out-of-range or NaN box in a *target*
would teach the model wrong coordinates, so such a record is skipped (or raises in strict
mode) rather than silently clipped.

Which bracket groups count as grounding depends on the task (`is_chat_task`): in grounding
targets (``rec``, ``sl``, ``vtg``, and every other task but chat) any bracket group of
numbers is a box or span and must be valid; in free chat (``chat``, ``*_chat``) only groups
written like the model's format are, so ordinary number lists (``x = [1, 2, 3]``) are text.
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
# A coordinate as the model writes it: digits, a point, digits (``0.123``; no sign, exponent).
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")


def _is_numeric(content: str) -> bool:
    """Whether a bracket group is a comma-separated list of >= 2 numbers (meant as coordinates).

    Split at commas, then one anchored match per item: linear in ``len(content)``.

    Example:
        >>> _is_numeric(" 0.1, 2e-3 ,NaN"), _is_numeric("sic"), _is_numeric("0.5")
        (True, False, False)
    """
    items = content.split(",")
    return len(items) >= 2 and all(_NUM.fullmatch(item.strip()) for item in items)


def _looks_like_grounding(content: str, n: int) -> bool:
    """Whether a bracket group is written like a box (``n == 4``) or span (``n == 2``) of the
    model's format: exactly ``n`` comma-separated decimals, each in [0, 1].

    Linear in ``len(content)`` (one split, one anchored match per item).

    Example:
        >>> _looks_like_grounding("0.12, 0.30, 0.56, 0.71", 4), _looks_like_grounding("3, 4", 2)
        (True, False)
    """
    items = [item.strip() for item in content.split(",", n)]
    return len(items) == n and all(
        _DECIMAL.fullmatch(item) and float(item) <= 1.0 for item in items
    )


def is_chat_task(task: str | None) -> bool:
    """Whether records of ``task`` are free chat (``chat`` or ``*_chat``), whose text may hold
    ordinary number lists; see `check_grounding_text`'s ``strict``.

    Example:
        >>> is_chat_task("chat"), is_chat_task("image_chat"), is_chat_task("rec")
        (True, True, False)
    """
    return isinstance(task, str) and (task == "chat" or task.endswith("_chat"))


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
    if kind == "box" and (values[2] == values[0] or values[3] == values[1]):
        raise SampleError("box_empty", f"box [{content}] has zero area (x1 == x0 or y1 == y0)")
    if kind == "span" and values[1] == values[0]:
        raise SampleError("span_empty", f"span {{{content}}} has zero length (s == e)")


def check_grounding_text(text: str, strict: bool = True) -> None:
    """`SampleError` for any box ``[x0, y0, x1, y1]`` or span ``{s, e}`` in ``text`` that is
    not 4 (2) finite values in [0, 1] with ``x0 < x1, y0 < y1`` (``s < e``): a reversed box or
    span is ``*_reversed`` / ``span_end_before_start``, a zero-area box or zero-length span
    ``box_empty`` / ``span_empty``.

    Which bracket groups are boxes and spans:

    - ``strict=True`` (grounding targets: REC, SL, VTG and every task but chat): every group
      of >= 2 comma-separated numbers, so ``[0.1, 0.2, 1.5, 0.6]``, ``[3, 4]`` or ``{NaN, 1}``
      in such a record is a bad box or span, never text;
    - ``strict=False`` (free chat, see `is_chat_task`): only groups written like the model's
      format, exactly 4 (box, ``[..]``) or 2 (span, ``{..}``) comma-separated decimals with a
      point, each in [0, 1] (``[0.12, 0.30, 0.56, 0.71]``, ``{0.25, 0.63}``). They are still
      checked (reversed, empty); any other number list (``[3, 4]``, ``x = [1, 2, 3]``,
      ``[10, 20, 30, 40]``, ``{1, 2}``, ``[0.1, 0.2, 0.5]``) is ordinary text. The price: a
      chat box with a value outside [0, 1] (``[0.1, 0.2, 1.5, 0.6]``) reads as text too.

    Groups that are not lists of numbers (``[sic]``, ``{name}``) are ordinary text in both.

    Args:
        text: one turn's text.
        strict: validate every numeric group (True) or only grounding-looking ones (False).

    Example:
        >>> check_grounding_text("the dog [0.1, 0.2, 0.5, 0.6] runs {0.10, 0.40}")
        >>> check_grounding_text("x = [1, 2, 3] and [10, 20, 30, 40]", strict=False)
        >>> check_grounding_text("[0.5, 0.2, 0.1, 0.6]")
        Traceback (most recent call last):
        ...
        groundinggpt.data.records.SampleError: box [0.5, 0.2, 0.1, 0.6] has x1 < x0 or y1 < y0
    """
    for kind, (pattern, n) in _GROUPS.items():
        for match in pattern.finditer(text):
            content = match.group(1)
            grounding = _is_numeric(content) if strict else _looks_like_grounding(content, n)
            if grounding:
                _check_group(kind, content, n)
