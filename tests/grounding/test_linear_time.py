"""Parsing model output and validating training text stay linear on huge adversarial inputs."""

from __future__ import annotations

import time

import pytest

from groundinggpt.data.records import SampleError
from groundinggpt.data.validation import check_grounding_text
from groundinggpt.grounding.format import parse_boxes, parse_spans

MB = 1_000_000
HUGE = {
    "digits": "1" * MB,
    "repeated_pairs": "0.1,0.2," * (MB // 8),
    "open_bracket_digits": "[" + "1" * MB,
    "bracketed_pairs": "[" + "0.1,0.2," * (MB // 8) + "]",
    "bracketed_digits_then_letter": "[1," + "1" * MB + "x]",
    "braced_digits": "{1, " + "1" * MB + "e}",
    "open_brackets": "[" * MB,
}


@pytest.mark.parametrize("case", list(HUGE))
def test_parse_and_validate_a_megabyte_in_under_a_second(case: str) -> None:
    text = HUGE[case]
    start = time.perf_counter()
    assert parse_boxes(text) == [] and parse_spans(text) == []
    try:
        check_grounding_text(text)
    except SampleError as err:  # a huge numeric group is malformed, and says so briefly
        assert len(str(err)) < 200
    assert time.perf_counter() - start < 1.0


def test_huge_numeric_group_is_named_with_a_short_message() -> None:
    with pytest.raises(SampleError, match=r"box needs 4 values") as err:
        check_grounding_text("[0.5," + "1" * MB + "]")
    assert err.value.kind == "box_malformed" and len(str(err.value)) < 200


@pytest.mark.parametrize(
    ("text", "boxes"),
    [
        ("[1., .5, 0.25e0, 1E-1]", [(0.25, 0.1, 1.0, 0.5)]),
        ("[+0.1, 0.2, 0.3, 0.4]", [(0.1, 0.2, 0.3, 0.4)]),
        ("[0.1, 0.2, 0.3, .]", []),
        ("[0.1, 0.2, 0.3, 0.4e]", []),
        ("[0.1, 0.2, 0.3, 1.2.3]", []),
    ],
)
def test_number_grammar_is_unchanged(text: str, boxes: list) -> None:
    assert parse_boxes(text) == [pytest.approx(b) for b in boxes]
