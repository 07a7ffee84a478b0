"""Fuzz: the answer parser never raises, returns well-formed boxes/spans and stays linear on
random text of digits, brackets, braces, commas and dots up to ~50k characters.

The default suite runs 30 examples; ``-m slow`` runs 2000 and, with ``-s``, prints what the
examples held (lengths, how many parsed to boxes/spans, the slowest parse).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundinggpt.grounding.format import parse_box, parse_boxes, parse_span, parse_spans

MAX_CHARS = 50_000
PARSE_SECONDS = 0.5  # one parse of <= 50k characters (linear: ~10 ms)
REPEAT = 10
REPEAT_SECONDS = 2.0  # a 10x longer text (<= 500k characters); quadratic would take minutes

# Tokens that make the grammar's hard cases: digit runs, partial numbers, signs, exponents,
# unclosed or nested brackets, separators, a few words and non-ASCII digits.
_TOKENS = st.sampled_from(
    ["[", "]", "{", "}", ",", ", ", ".", " ", "\n", "-", "+", "e", "E", "0", "1", "9", "0.",
     ".5", "0.123", "1.0", "12345678901234567890", "1e999", "nan", "inf", "x", "box", "٣",
     "[0.1, 0.2, 0.5, 0.6]", "[0.5,0.2,0.1,0.6]", "[2, -1, 0.5 0.6]", "{0.25, 0.63}", "{1,0}"]
)  # fmt: skip
_SNIPPET = st.one_of(
    st.lists(_TOKENS, min_size=1, max_size=60).map("".join),
    st.text(alphabet="0123456789[]{},. ", min_size=1, max_size=200),
)


@st.composite
def _answer_text(draw: st.DrawFn) -> str:
    """1-3 snippets, each repeated up to the size cap: long, structured and cheap to draw."""
    parts = []
    for snippet in draw(st.lists(_SNIPPET, min_size=1, max_size=3)):
        budget = MAX_CHARS // 3
        parts.append(snippet * draw(st.integers(1, max(1, budget // len(snippet)))))
    return "".join(parts)[:MAX_CHARS]


@pytest.fixture(scope="module")
def stats() -> Iterator[Counter]:
    """Outcome counts of the module's examples, printed at the end (visible with ``-s``)."""
    counter: Counter = Counter()
    yield counter
    if counter["examples"]:
        mean = counter["chars"] // counter["examples"]
        print(
            f"\nparser fuzz: {counter['examples']} examples, mean {mean} chars, "
            f"{counter['long']} >= 10k chars; {counter['with_box']} with a box, "
            f"{counter['with_span']} with a span, {counter['with_neither']} with neither; "
            f"slowest parse {counter['max_ms']} ms, slowest 10x parse {counter['max_10x_ms']} ms"
        )


def _timed_parse(text: str) -> tuple[list, list, float]:
    start = time.perf_counter()
    boxes, spans = parse_boxes(text), parse_spans(text)
    first = parse_box(text), parse_span(text)
    elapsed = time.perf_counter() - start
    assert first == (boxes[0] if boxes else None, spans[0] if spans else None)
    return boxes, spans, elapsed


def _check(text: str, stats: Counter) -> None:
    boxes, spans, elapsed = _timed_parse(text)
    assert elapsed < PARSE_SECONDS, f"{len(text)} chars took {elapsed:.3f} s"
    for box in boxes:
        assert len(box) == 4 and all(0.0 <= v <= 1.0 for v in box)
        assert box[0] <= box[2] and box[1] <= box[3]
    for s, e in spans:
        assert 0.0 <= s <= e <= 1.0
    _, _, elapsed_10x = _timed_parse(text * REPEAT)
    assert elapsed_10x < REPEAT_SECONDS, f"{REPEAT}x {len(text)} chars took {elapsed_10x:.3f} s"
    stats["examples"] += 1
    stats["chars"] += len(text)
    stats["long"] += len(text) >= 10_000
    stats["with_box"] += bool(boxes)
    stats["with_span"] += bool(spans)
    stats["with_neither"] += not boxes and not spans
    stats["max_ms"] = max(stats["max_ms"], round(elapsed * 1000))
    stats["max_10x_ms"] = max(stats["max_10x_ms"], round(elapsed_10x * 1000))


_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=30, **_SETTINGS)
@given(text=_answer_text())
def test_parser_is_total_and_linear_on_random_text(stats: Counter, text: str) -> None:
    _check(text, stats)


@pytest.mark.slow
@settings(max_examples=2000, **_SETTINGS)
@given(text=_answer_text())
def test_parser_is_total_and_linear_on_random_text_many(stats: Counter, text: str) -> None:
    _check(text, stats)


def test_known_hard_inputs_parse_fast() -> None:
    """Fixed worst cases next to the fuzz: long digit runs in and out of groups."""
    for text in ("[" + "1" * MAX_CHARS, "[0.1," * (MAX_CHARS // 5), "{" + "9." * MAX_CHARS + "}"):
        boxes, spans, elapsed = _timed_parse(text)
        assert boxes == [] and spans == [] and elapsed < PARSE_SECONDS
