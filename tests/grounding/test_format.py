"""Tests of the box / span text format: exact strings, tolerant parsing, fuzzing, IoU."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from groundinggpt.grounding.format import (
    box_iou,
    format_box,
    format_boxes,
    format_span,
    paired_box_iou,
    paired_span_iou,
    parse_box,
    parse_boxes,
    parse_span,
    parse_spans,
    parse_yes_no,
    pope_answer,
    span_iou,
)

coord = st.floats(min_value=-0.5, max_value=1.5, allow_nan=False, allow_infinity=False)
box_st = st.tuples(coord, coord, coord, coord)
span_st = st.tuples(coord, coord)


def _clip(v: float) -> float:
    return min(max(v, 0.0), 1.0)


# --- formatting -------------------------------------------------------------------------------


def test_format_box_exact() -> None:
    assert format_box((0.123, 0.456, 0.789, 0.9)) == "[0.123, 0.456, 0.789, 0.900]"
    assert format_box([0, 1, 0.5, 0.25]) == "[0.000, 1.000, 0.500, 0.250]"
    assert format_box(torch.tensor([0.1, 0.2, 0.3, 0.4])) == "[0.100, 0.200, 0.300, 0.400]"


def test_format_box_clips_and_never_writes_negative_zero() -> None:
    assert format_box((-0.2, -0.0, 1.7, -1e-9)) == "[0.000, 0.000, 1.000, 0.000]"


@pytest.mark.parametrize(
    "bad",
    [
        (0.1, 0.2, 0.3),
        (0.1, 0.2, 0.3, 0.4, 0.5),
        (0.1, math.nan, 0.3, 0.4),
        (0.1, 0.2, math.inf, 0.4),
        "0.1, 0.2, 0.3, 0.4",
        (0.1, None, 0.3, 0.4),
        5,
    ],
)
def test_format_box_rejects_bad_input(bad) -> None:
    with pytest.raises(ValueError):
        format_box(bad)


def test_format_boxes_back_to_back() -> None:
    text = format_boxes([(0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)])
    assert text == "[0.000, 0.000, 0.500, 0.500][0.500, 0.500, 1.000, 1.000]"
    assert format_boxes([]) == ""


def test_format_span_exact_and_errors() -> None:
    assert format_span((0.25, 0.63)) == "{0.25, 0.63}"
    assert format_span((-1, 2)) == "{0.00, 1.00}"
    for bad in [(0.1,), (0.1, 0.2, 0.3), (math.nan, 0.2), "0.1 0.2"]:
        with pytest.raises(ValueError):
            format_span(bad)


# --- tolerant parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[0.100, 0.200, 0.300, 0.400]", [(0.1, 0.2, 0.3, 0.4)]),
        ("[0.1,0.2,0.3,0.4]", [(0.1, 0.2, 0.3, 0.4)]),  # no spaces
        ("[ 0.1 ,0.2 ,  0.3,0.4 ]", [(0.1, 0.2, 0.3, 0.4)]),
        ("[0.1 0.2 0.3 0.4]", [(0.1, 0.2, 0.3, 0.4)]),  # whitespace only
        ("[0.12345, .2, 0.3, 1.]", [(0.12345, 0.2, 0.3, 1.0)]),  # any decimals
        ("[0, 0, 1, 1]", [(0.0, 0.0, 1.0, 1.0)]),  # integers
        ("[0.5, 0.6, 0.1, 0.2]", [(0.1, 0.2, 0.5, 0.6)]),  # reversed corners
        ("[-0.2, 0.3, 1.4, 2]", [(0.0, 0.3, 1.0, 1.0)]),  # clipped
        ("[1e-1, 2E-1, +0.3, 0.4]", [(0.1, 0.2, 0.3, 0.4)]),  # exponents, plus sign
        ("It is at [0.1, 0.2, 0.3, 0.4].", [(0.1, 0.2, 0.3, 0.4)]),
        ("[0.1, 0.2, 0.3, 0.4][0.5, 0.5, 0.6, 0.6]", [(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.6, 0.6)]),
        ("[[0.1, 0.2, 0.3, 0.4]]", [(0.1, 0.2, 0.3, 0.4)]),
        ("[0.1, 0.2, 0.3]", []),  # three numbers
        ("[0.1, 0.2, 0.3, 0.4, 0.5]", []),  # five numbers
        ("[0.1, nan, 0.3, 0.4]", []),
        ("[0.1, inf, 0.3, 0.4]", []),
        ("[1e999, 0.2, 0.3, 0.4]", []),  # overflows to inf
        ("[0.1, 0.2, 0.3, 0.4", []),  # unclosed
        ("[a, b, c, d]", []),
        ("[0.1, 0.2, 0.3, 0.4x]", []),
        ("[\u0661, 0.2, 0.3, 0.4]", []),  # Arabic-Indic digit: float() would take it
        ("", []),
        ("no box here", []),
        ("[bad][0.1, 0.2, 0.3, 0.4]", [(0.1, 0.2, 0.3, 0.4)]),  # skips the bad group
    ],
)
def test_parse_boxes_tolerant(text: str, expected) -> None:
    got = parse_boxes(text)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e)


def test_parse_box_first_or_none() -> None:
    assert parse_box("[0.3, 0.3, 0.4, 0.4][0.1, 0.1, 0.2, 0.2]") == pytest.approx(
        (0.3, 0.3, 0.4, 0.4)
    )
    assert parse_box("nothing") is None
    assert parse_box(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{0.25, 0.63}", [(0.25, 0.63)]),
        ("{0.25,0.63}", [(0.25, 0.63)]),
        ("{1, 0}", [(0.0, 1.0)]),  # reversed
        ("{-0.5, 1.5}", [(0.0, 1.0)]),  # clipped
        ("from {0.1, 0.2} and {0.5, 0.7}.", [(0.1, 0.2), (0.5, 0.7)]),
        ("{0.1}", []),
        ("{0.1, 0.2, 0.3}", []),
        ("{nan, 0.2}", []),
        ("[0.1, 0.2]", []),  # spans need braces
        ("", []),
    ],
)
def test_parse_spans_tolerant(text: str, expected) -> None:
    got = parse_spans(text)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e)
    assert parse_span(text) == (pytest.approx(expected[0]) if expected else None)


@settings(max_examples=300, deadline=None)
@given(box_st)
def test_box_round_trip(box) -> None:
    parsed = parse_box(format_box(box))
    x0, y0, x1, y1 = (_clip(v) for v in box)
    expected = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    assert parsed == pytest.approx(expected, abs=5e-4 + 1e-12)


@settings(max_examples=300, deadline=None)
@given(span_st)
def test_span_round_trip(span) -> None:
    parsed = parse_span(format_span(span))
    s, e = (_clip(v) for v in span)
    assert parsed == pytest.approx((min(s, e), max(s, e)), abs=5e-3 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(box_st, max_size=5))
def test_several_boxes_round_trip(boxes) -> None:
    assert len(parse_boxes(format_boxes(boxes))) == len(boxes)


# --- fuzzing: the parsers never raise and always return valid geometry ------------------------


def _check_parsed(text: str) -> None:
    for x0, y0, x1, y1 in parse_boxes(text):
        assert 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0
    for s, e in parse_spans(text):
        assert 0.0 <= s <= e <= 1.0
    assert parse_yes_no(text) in (True, False, None)
    assert pope_answer(text) in ("yes", "no")
    b, sp = parse_box(text), parse_span(text)
    assert b is None or len(b) == 4
    assert sp is None or len(sp) == 2


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_parsers_never_raise_on_any_text(text: str) -> None:
    _check_parsed(text)


_NOISE = st.text(alphabet="[]{}(),.;:-+eE 0123456789naifINF\n\t", max_size=4)


@st.composite
def mutated_output(draw) -> str:
    """A valid model answer with random character edits (delete / insert / replace)."""
    boxes = draw(st.lists(box_st, min_size=1, max_size=3))
    spans = draw(st.lists(span_st, max_size=2))
    chars = list(format_boxes(boxes) + " and " + "".join(format_span(s) for s in spans))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        noise = draw(_NOISE)
        if op == "delete":
            del chars[i : i + 1]
        elif op == "insert":
            chars[i:i] = list(noise)
        else:
            chars[i : i + 1] = list(noise)
    return "".join(chars)


@settings(max_examples=500, deadline=None)
@given(mutated_output())
def test_parsers_never_raise_on_mutated_outputs(text: str) -> None:
    _check_parsed(text)


def test_parsers_on_long_garbage_are_fast() -> None:
    text = "[" * 20_000 + "0.1, 0.2, 0.3, 0.4" + "]" * 20_000 + "{1," * 10_000
    assert parse_boxes(text) == [pytest.approx((0.1, 0.2, 0.3, 0.4))]
    assert parse_spans(text) == []


# --- yes / no ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is", True),
        ("yes", True),
        ("YES!", True),
        ("Yes. There is no doubt.", True),  # only the first sentence counts
        ("No.", False),
        ("no", False),
        ("There is not a dog", False),
        ("Yes, but it is not red", False),  # negation wins, as in LLaVA's POPE eval
        ("No, there is no cat.", False),
        ("nope", None),
        ("Maybe", None),
        ("", None),
        ("...", None),
        (". Yes", True),  # an empty first sentence is skipped
        ("Nothing like that. Yes", None),  # "nothing" is not the word "no"
        ("yesterday", None),
        ("There isn't a cat", None),  # contractions are not negations under this rule
    ],
)
def test_parse_yes_no(text: str, expected) -> None:
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("No.", "no"),
        ("no, there is none", "no"),
        ("There is not a dog in the image.", "no"),
        ("Yes, there is no doubt", "no"),  # commas removed: "no" is a word
        ("Yes. No.", "yes"),  # only the first sentence
        ("", "yes"),  # everything without a negation word is yes
        ("I cannot tell", "yes"),
        # Quirks of the reference rule, kept on purpose (numbers stay comparable):
        ("NO", "yes"),  # case-sensitive
        ("Not at all", "yes"),
        ("No!", "yes"),  # only commas are stripped
        ("No\nthere is none", "yes"),  # words split on single spaces only
        (" No", "no"),
    ],
)
def test_pope_answer_reference_rule(text: str, expected: str) -> None:
    assert pope_answer(text) == expected


# --- IoU --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 0, 1, 1), (0, 0, 1, 1), 1.0),
        ((0, 0, 1, 1), (0, 0, 0.5, 1), 0.5),
        ((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1), 0.0),  # touching corners
        ((0, 0, 0.2, 0.2), (0.6, 0.6, 1, 1), 0.0),  # disjoint
        ((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75), 0.0625 / 0.4375),
        ((0.2, 0.2, 0.2, 0.2), (0.2, 0.2, 0.2, 0.2), 0.0),  # degenerate, zero union
        ((0.2, 0.2, 0.2, 0.6), (0, 0, 1, 1), 0.0),  # zero-width box
    ],
)
def test_box_iou_hand_cases(a, b, iou) -> None:
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 1), (0, 0.5), 0.5),
        ((0.2, 0.4), (0.3, 0.5), 1 / 3),
        ((0, 0.3), (0.5, 1), 0.0),
        ((0.4, 0.4), (0.4, 0.4), 0.0),
    ],
)
def test_span_iou_hand_cases(a, b, iou) -> None:
    assert span_iou(a, b) == pytest.approx(iou)
    assert span_iou(b, a) == pytest.approx(iou)


def test_paired_box_iou_matches_torchvision_diagonal() -> None:
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(64, 2, 2, generator=g, dtype=torch.float64)  # (N, corner, xy)
    a = torch.cat([corners.min(1).values, corners.max(1).values], -1)  # (N, 4)
    b = torch.roll(a, 1, 0) * 0.5 + a * 0.5  # overlapping partners
    expected = torchvision.ops.box_iou(a, b).diagonal()
    torch.testing.assert_close(paired_box_iou(a, b), expected)


def test_paired_span_iou_shapes_and_zero_union() -> None:
    a = torch.tensor([[0.0, 1.0], [0.3, 0.3]])
    b = torch.tensor([[0.0, 0.5], [0.3, 0.3]])
    torch.testing.assert_close(paired_span_iou(a, b), torch.tensor([0.5, 0.0]))
