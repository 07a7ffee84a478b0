"""Grounding text format: boxes and time spans as plain text, and back.

The format is fixed by the design contract (docs/architecture.md):

- box: ``[x0, y0, x1, y1]``, each value in [0, 1] with 3 decimals, relative to the padded
  square image; several boxes for one phrase stand back to back: ``[..][..]``.
- time span: ``{s, e}``, fractions of the video duration in [0, 1] with 2 decimals.

Formatting is strict (bad input raises `ValueError`); parsing is tolerant and never raises on
model output: missing or extra spaces, any number of decimals, integers (``1``, ``0``),
exponents, values outside [0, 1] (clipped) and reversed corners (swapped so ``x0 <= x1`` and
``y0 <= y1``; ``s <= e``) are all accepted. A bracket group parses only if it holds exactly
4 (box) or 2 (span) finite numbers separated by commas and/or whitespace; anything else in it
(words, NaN, inf, a fifth number) makes that group a miss, and the parser moves on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

Box = tuple[float, float, float, float]
Span = tuple[float, float]

BOX_DECIMALS = 3
SPAN_DECIMALS = 2

# ASCII digits only: Python's float() also accepts other Unicode digits, which a model never
# means as coordinates. Each digit run has one way to match (no ``[0-9]+\.?[0-9]*``, whose
# splits of a long run made a failed match quadratic), so matching is linear.
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BOX_GROUP = re.compile(r"\[([^\[\]]*)\]")
_SPAN_GROUP = re.compile(r"\{([^{}]*)\}")
_SEPARATOR = re.compile(r"[,\s]+")


def _clip01(value: float) -> float:
    # `+ 0.0` turns -0.0 into 0.0, which would otherwise format as "-0.000".
    return min(max(value, 0.0), 1.0) + 0.0


def _finite_values(values: Sequence[float], n: int, what: str) -> list[float]:
    """Check that ``values`` holds exactly ``n`` finite real numbers and return them as floats."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of {n} numbers, got the string {values!r}")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a sequence of {n} numbers, got {values!r}") from err
    if len(out) != n:
        raise ValueError(f"{what} needs exactly {n} values, got {len(out)}: {values!r}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} values must be finite, got {values!r}")
    return out


def format_box(box: Sequence[float]) -> str:
    """``(x0, y0, x1, y1)`` -> ``"[0.123, 0.456, 0.789, 0.900]"`` (clipped to [0, 1], 3 decimals).

    The corner order is kept as given: reversed corners in a training target are a data bug
    that should show, not be hidden.
    """
    values = [_clip01(v) for v in _finite_values(box, 4, "box")]
    return "[" + ", ".join(f"{v:.{BOX_DECIMALS}f}" for v in values) + "]"


def format_boxes(boxes: Sequence[Sequence[float]]) -> str:
    """Several boxes back to back: ``"[..][..]"``."""
    return "".join(format_box(box) for box in boxes)


def format_span(span: Sequence[float]) -> str:
    """``(s, e)`` -> ``"{0.25, 0.63}"`` (clipped to [0, 1], 2 decimals)."""
    values = [_clip01(v) for v in _finite_values(span, 2, "span")]
    return "{" + ", ".join(f"{v:.{SPAN_DECIMALS}f}" for v in values) + "}"


def _parse_group(content: str, n: int) -> list[float] | None:
    """The ``n`` clipped numbers inside one bracket group, or None if it is not exactly that."""
    tokens = [t for t in _SEPARATOR.split(content) if t]
    if len(tokens) != n or not all(_NUMBER.fullmatch(t) for t in tokens):
        return None
    values = [float(t) for t in tokens]
    if not all(math.isfinite(v) for v in values):  # e.g. "1e999" overflows to inf
        return None
    return [_clip01(v) for v in values]


def parse_boxes(text: str) -> list[Box]:
    """All boxes in ``text``, in order of appearance; ``[]`` when none parses. Never raises."""
    if not isinstance(text, str):
        return []
    boxes: list[Box] = []
    for match in _BOX_GROUP.finditer(text):
        values = _parse_group(match.group(1), 4)
        if values is not None:
            x0, y0, x1, y1 = values
            boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return boxes


def parse_box(text: str) -> Box | None:
    """The first box in ``text``, or None. Never raises."""
    boxes = parse_boxes(text)
    return boxes[0] if boxes else None


def parse_spans(text: str) -> list[Span]:
    """All time spans ``{s, e}`` in ``text``, in order; ``[]`` when none parses. Never raises."""
    if not isinstance(text, str):
        return []
    spans: list[Span] = []
    for match in _SPAN_GROUP.finditer(text):
        values = _parse_group(match.group(1), 2)
        if values is not None:
            spans.append((min(values), max(values)))
    return spans


def parse_span(text: str) -> Span | None:
    """The first time span in ``text``, or None. Never raises."""
    spans = parse_spans(text)
    return spans[0] if spans else None


_SENTENCE_END = re.compile(r"[.!?\n]")
_PUNCTUATION = re.compile(r"[^\w\s]")
_WORD = re.compile(r"\w")


def parse_yes_no(text: str) -> bool | None:
    """Normalise a yes/no answer; a stricter, case-insensitive cousin of the POPE rule.

    Used by the training metrics. Benchmarks use `pope_answer`, the exact reference rule.

    Rule: take the first sentence (text up to the first ``.``, ``!``, ``?`` or newline; leading
    empty sentences are skipped), replace punctuation with spaces, lowercase, split into words.
    If the words contain ``no`` or ``not`` the answer is False; else if they contain ``yes`` it
    is True; else it is None (unparsable). So "Yes, there is" -> True, "No." -> False,
    "There is not a dog" -> False, "Yes, but not red" -> False (negation wins, as in LLaVA),
    "Maybe" -> None. Contractions such as "isn't" are *not* negations under this rule
    (the reference rule does not catch them either).
    Unlike the reference rule, which is case-sensitive, splits sentences only at ``.``, strips
    only commas and maps everything without a negation to "yes", an answer with neither
    word is None, so the metrics can count it as unparsed instead of as a free "yes".
    Never raises.
    """
    if not isinstance(text, str):
        return None
    sentences = [s for s in _SENTENCE_END.split(text) if _WORD.search(s)]
    if not sentences:
        return None
    words = set(_PUNCTUATION.sub(" ", sentences[0]).lower().split())
    if words & {"no", "not"}:
        return False
    if "yes" in words:
        return True
    return None


_POPE_NEGATIONS = frozenset({"No", "no", "not"})


def pope_answer(text: str) -> str:
    """``"yes"`` or ``"no"`` by the POPE reference evaluation's rule, reproduced exactly.

    The rule of the official POPE ``evaluate.py`` (copied unchanged into LLaVA's
    ``eval_pope.py``): keep the text before the first ``.``, delete commas, split on single
    spaces; if one of the words is exactly ``No``, ``no`` or ``not`` the answer is "no", else
    it is "yes". Everything else counts as "yes", including empty or unrelated text. Its
    quirks are kept so numbers stay comparable with published ones: matching is
    case-sensitive ("NO", "Not" -> yes), other punctuation stays attached ("No!" -> yes,
    "No;" -> yes), and newlines do not split words ("No\nthere" -> yes). Never raises;
    non-text counts as "" (-> yes). `parse_yes_no` is the stricter rule used in training.

    Example:
        >>> pope_answer("No, there is not."), pope_answer("Yes"), pope_answer("NO")
        ('no', 'yes', 'yes')
    """
    if not isinstance(text, str):
        text = ""
    words = text.split(".")[0].replace(",", "").split(" ")
    return "no" if _POPE_NEGATIONS.intersection(words) else "yes"


def paired_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of corresponding boxes: ``(N, 4), (N, 4) -> (N,)``.

    Unlike ``torchvision.ops.box_iou`` (all pairs, ``(N, M)``) this is the element-wise IoU
    that metrics need, in linear memory; a pair with zero union area (degenerate boxes) gets
    0.0 instead of NaN. Corners are used as given; reversed corners give zero area.
    """
    a, b = torch.broadcast_tensors(a, b)  # (N, 4)
    lt = torch.maximum(a[..., :2], b[..., :2])  # (N, 2)
    rb = torch.minimum(a[..., 2:], b[..., 2:])  # (N, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N,)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)  # (N,)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)  # (N,)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def paired_span_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Temporal IoU of corresponding spans: ``(N, 2), (N, 2) -> (N,)``; zero union -> 0.0."""
    a, b = torch.broadcast_tensors(a, b)  # (N, 2)
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    len_a = (a[..., 1] - a[..., 0]).clamp(min=0)  # (N,)
    len_b = (b[..., 1] - b[..., 0]).clamp(min=0)  # (N,)
    union = len_a + len_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes ``(x0, y0, x1, y1)``; 0.0 when the union has zero area."""
    ta = torch.tensor(_finite_values(a, 4, "box"), dtype=torch.float64)
    tb = torch.tensor(_finite_values(b, 4, "box"), dtype=torch.float64)
    return float(paired_box_iou(ta[None], tb[None])[0])


def span_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU of two spans ``(s, e)``; 0.0 when the union has zero length."""
    ta = torch.tensor(_finite_values(a, 2, "span"), dtype=torch.float64)
    tb = torch.tensor(_finite_values(b, 2, "span"), dtype=torch.float64)
    return float(paired_span_iou(ta[None], tb[None])[0])
