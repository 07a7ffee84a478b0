"""Which bracket groups are boxes/spans: zero-area targets are skipped, number lists in free
chat are text, grounding targets (REC, SL, VTG) stay strict."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.data.conftest import conv, write_records

from groundinggpt.data.conversation import ConversationFormatter
from groundinggpt.data.dataset import ConversationDataset
from groundinggpt.data.records import SampleError
from groundinggpt.data.synthetic.generate import ensure_synthetic, uniform_sizes
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.data.validation import check_grounding_text, is_chat_task
from groundinggpt.grounding.format import parse_boxes, parse_spans
from groundinggpt.modalities import SPECIAL_TOKENS, modality_specs


def _kind(text: str, strict: bool = True) -> str:
    with pytest.raises(SampleError) as err:
        check_grounding_text(f"it is {text} here", strict=strict)
    return err.value.kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[0.500, 0.200, 0.500, 0.600]", "box_empty"),
        ("[0.100, 0.300, 0.500, 0.3]", "box_empty"),
        ("[0.4, 0.4, 0.4, 0.4]", "box_empty"),
        ("[0, 0, 0, 0]", "box_empty"),
        ("{0.30, 0.30}", "span_empty"),
        ("{1.0, 1.00}", "span_empty"),
    ],
)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "chat"])
def test_zero_area_boxes_and_zero_length_spans_are_rejected(
    text: str, kind: str, strict: bool
) -> None:
    if not strict and text == "[0, 0, 0, 0]":  # integers: a number list in chat
        check_grounding_text(text, strict=False)
        return
    assert _kind(text, strict) == kind


def test_reversed_is_still_reversed_not_empty() -> None:
    assert _kind("[0.5, 0.5, 0.4, 0.5]") == "box_reversed"  # x1 < x0 is checked first
    assert _kind("{0.5, 0.4}") == "span_end_before_start"


@pytest.mark.parametrize(
    "text",
    [
        "Use [3, 4] as the shape.",
        "x = [1, 2, 3]",
        "the corners [10, 20, 30, 40] in pixels",
        "probabilities [0.1, 0.2, 0.7]",  # three decimals: not a box
        "coefficients [1.5, 2.5, 3.5, 4.5]",  # decimals above 1
        "a set {1, 2} and a dict {1: 2}",
        "a pair {1.5, 2.5}",
        "signed [-0.1, 0.2, 0.3, 0.4]",  # a sign: not the model's format
        "exponent [1e-1, 0.2, 0.3, 0.4]",
        "nan [nan, 0.2, 0.3, 0.4] and {inf, 0.5}",
        "matrix [[1, 2], [3, 4]] and [0.5, 1.2, 0.7, 0.9]",
    ],
)
def test_number_lists_in_chat_are_text(text: str) -> None:
    check_grounding_text(text, strict=False)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[0.500, 0.200, 0.100, 0.600]", "box_reversed"),
        ("[0.12, 0.30, 0.12, 0.71]", "box_empty"),
        ("{0.63, 0.25}", "span_end_before_start"),
        ("{0.25,0.25}", "span_empty"),
        ("[0.1, 0.2, 0.5, 0.6][0.5, 0.2, 0.1, 0.6]", "box_reversed"),  # the second of two
    ],
)
def test_grounding_looking_groups_in_chat_are_still_checked(text: str, kind: str) -> None:
    assert _kind(text, strict=False) == kind


@pytest.mark.parametrize(
    "text",
    ["[0.12, 0.30, 0.56, 0.71]", "[0.0, 0.0, 1.0, 1.0]{0.25, 0.63}", " [ 0.1 ,0.2, 0.3,0.4 ] "],
)
def test_valid_grounding_passes_both_ways(text: str) -> None:
    check_grounding_text(text)
    check_grounding_text(text, strict=False)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[3, 4]", "box_malformed"),
        ("[10, 20, 30, 40]", "box_out_of_range"),
        ("[0.1, 0.2, 1.5, 0.6]", "box_out_of_range"),
        ("{1, 2}", "span_out_of_range"),
        ("{nan, 0.5}", "span_not_finite"),
    ],
)
def test_strict_mode_keeps_every_number_list_a_box(text: str, kind: str) -> None:
    assert _kind(text, strict=True) == kind


def test_chat_task_names() -> None:
    assert is_chat_task("chat") and is_chat_task("image_chat") and is_chat_task("video_chat")
    for task in ("rec", "sl", "vtg", "caption", "region", "pope", "unknown", None, "chatter"):
        assert not is_chat_task(task)


def test_huge_groups_stay_linear() -> None:
    start = time.perf_counter()
    check_grounding_text("[" + "0.5, " * 200_000 + "]", strict=False)
    check_grounding_text("{" + "9" * 1_000_000 + ".5, 0.1}", strict=False)
    assert time.perf_counter() - start < 1.0


@pytest.fixture(scope="module")
def formatter() -> ConversationFormatter:
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return ConversationFormatter(tok, modality_specs({"image": 2}))


def _dataset(tmp_path: Path, formatter, records: list, task: str | None) -> ConversationDataset:
    ann = write_records(tmp_path / "a.json", records)
    return ConversationDataset(ann, tmp_path, formatter, {}, 256, task=task)


def test_dataset_applies_the_rule_per_task(tmp_path: Path, formatter) -> None:
    """Text-only records (no media): the dataset task, or a record's own ``task``, decides."""
    numbers = conv("What is x = [1, 2, 3] plus [10, 20, 30, 40]?", "It is [11, 22, 33, 40].")
    empty = conv("Where is the dog?", "[0.500, 0.200, 0.500, 0.600]")
    records = [
        {"id": "n", "conversations": numbers},
        {"id": "e", "conversations": empty},
        {"id": "rec", "task": "rec", "conversations": numbers},
    ]
    chat = _dataset(tmp_path, formatter, records, task="chat")
    assert "skipped" not in chat[0]
    assert chat[1]["skipped"] == "box_empty"
    assert chat[2]["skipped"] == "box_malformed"  # the record's own task wins
    for task in ("rec", "sl", "vtg", None):
        strict = _dataset(tmp_path, formatter, records[:2], task=task)
        assert strict[0]["skipped"] == "box_malformed"
        assert strict[1]["skipped"] == "box_empty"


def test_synthetic_targets_are_never_empty(tmp_path: Path) -> None:
    """Every box and span the generator writes has positive size (shapes are >= 25 % of the
    image side, spans >= 25 % of the frames), so none becomes ``box_empty``/``span_empty``."""
    grounded = ("rec", "vtg", "sl", "image_chat", "video_chat", "audio_chat")
    sizes = uniform_sizes(train=0)
    sizes |= {t: {**sizes[t], "train": 6} for t in grounded}
    root = ensure_synthetic(tmp_path / "syn", num_workers=1, progress=False, sizes=sizes)
    n = 0
    for path in sorted((root / "annotations").glob("*.json")):
        for record in json.loads(path.read_text()):
            for turn in record["conversations"]:
                check_grounding_text(turn["value"], strict=not is_chat_task(record["task"]))
                for x0, y0, x1, y1 in parse_boxes(turn["value"]):
                    assert x1 - x0 > 0.05 and y1 - y0 > 0.05
                    n += 1
                for s, e in parse_spans(turn["value"]):
                    assert e - s > 0.05
                    n += 1
    assert n >= 30
