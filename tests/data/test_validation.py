from __future__ import annotations

import pytest

from groundinggpt.data.records import SampleError
from groundinggpt.data.validation import (
    check_conversations,
    check_grounding_text,
    check_modalities,
)


def _conv(*values: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    "text",
    [
        "a dog [0.100, 0.200, 0.500, 0.600][0.0, 0.0, 1.0, 1.0] and {0.10, 0.55}",
        "no coordinates [sic] {name} [1] {x, y}",
        "a thin box [0.5, 0.5, 0.501, 0.6] and a short moment {0.30,0.31}",  # zero: box_empty
    ],
)
def test_valid_grounding_text_passes(text: str) -> None:
    check_grounding_text(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[0.5, 0.2, 0.1, 0.6]", "box_reversed"),
        ("[0.1, 0.7, 0.5, 0.6]", "box_reversed"),
        ("[0.1, 0.2, 1.5, 0.6]", "box_out_of_range"),
        ("[-0.1, 0.2, 0.5, 0.6]", "box_out_of_range"),
        ("[0.1, nan, 0.5, 0.6]", "box_not_finite"),
        ("[0.1, 0.2, 0.5]", "box_malformed"),
        ("{0.50, 0.20}", "span_end_before_start"),
        ("{0.10, 1.20}", "span_out_of_range"),
        ("{NaN, 0.5}", "span_not_finite"),
        ("{0.1, 0.2, 0.3}", "span_malformed"),
    ],
)
def test_bad_boxes_and_spans_are_named(text: str, kind: str) -> None:
    with pytest.raises(SampleError) as err:
        check_grounding_text(f"the thing {text} here")
    assert err.value.kind == kind


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({}, "no_conversation"),
        ({"conversations": []}, "no_conversation"),
        ({"conversations": _conv("only a question")}, "no_conversation"),
        ({"conversations": _conv("q", "   ")}, "empty_answer"),
        ({"conversations": _conv("q", "a", "q2", "")}, "empty_answer"),
        ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}, "malformed_record"),
        ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}, "malformed_record"),
        ({"conversations": "q a"}, "no_conversation"),
    ],
)  # fmt: skip
def test_bad_conversations_are_named(record: dict, kind: str) -> None:
    with pytest.raises(SampleError) as err:
        check_conversations(record)
    assert err.value.kind == kind


def test_unknown_modalities_are_named() -> None:
    keys, placeholders = {"image", "sound"}, {"<image>", "<sound>"}
    ok = {
        "id": "COCO_1.jpg",
        "image": "a.jpg",
        "meta": {"w": 3},
        "conversations": _conv("<image>", "a"),
    }
    check_modalities(ok, keys, placeholders)
    for record in (
        {"depth": "d.png", "conversations": _conv("q", "a")},
        {"audio": "a.wav", "conversations": _conv("q", "a")},
        {"conversations": _conv("<video>\nwhat", "a")},
    ):
        with pytest.raises(SampleError) as err:
            check_modalities(record, keys, placeholders)
        assert err.value.kind == "unknown_modality"
