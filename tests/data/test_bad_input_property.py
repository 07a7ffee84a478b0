"""Property: whatever a record or a media file holds, a dataset item is a sample or a counted skip.

The default suite runs 50 examples; ``-m slow`` runs 2000 and, with ``-s``, prints how many
were valid samples and how many were skipped per reason.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import wave
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from groundinggpt.data.conversation import ConversationFormatter
from groundinggpt.data.dataset import ConversationDataset
from groundinggpt.data.media import AudioProcessor, ImageProcessor, VideoProcessor
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.modalities import SPECIAL_TOKENS, modality_specs

REASON = re.compile(r"[a-z][a-z0-9_]*")
MEDIA = {"image": "m.png", "video": "m.mp4", "sound": "m.wav"}


@pytest.fixture(scope="module")
def dataset_parts() -> tuple[ConversationFormatter, dict]:
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    formatter = ConversationFormatter(tok, modality_specs({"image": 3, "video": 2, "audio": 2}))
    processors = {
        "image": ImageProcessor(size=8),
        "video": VideoProcessor(num_frames=2, size=8),
        "audio": AudioProcessor(),
    }
    return formatter, processors


def _png_prefix() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), "red").save(buf, format="PNG")
    return buf.getvalue()


def _wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


_PNG = _png_prefix()
_TONE = _wav(0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000))  # 0.5 s
_WAVS = [_TONE, _wav(np.zeros(8000)), _wav(np.zeros(1)), _TONE[: len(_TONE) // 2]]
_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<image>\nq", "<video>\nq", "<sound>\nq", "<image>", "<depth>", "a"]),
    st.sampled_from(["[0.1, 0.2, 0.5, 0.6]", "[0.5,0.2,0.1,0.6]", "{0.1, 0.4}", "[nan,1]"]),
    st.sampled_from(["[0.5, 0.2, 0.5, 0.6]", "{0.30, 0.30}", "x = [1, 2, 3]", "[10, 20, 30, 40]"]),
)
_turn = st.fixed_dictionaries(
    {"from": st.sampled_from(["human", "gpt", "system", 3]), "value": st.one_of(_text, st.none())}
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_media_value = st.one_of(
    st.sampled_from([*MEDIA.values(), "../m.png", "/etc/hosts", "missing.png", ""]), _json
)
_record = st.fixed_dictionaries(
    {"conversations": st.one_of(st.lists(_turn, max_size=4), _json)},
    optional={"id": _json, "image": _media_value, "video": _media_value, "sound": _media_value,
              "task": _json, "depth": st.just("d.png")},
)  # fmt: skip
_PH = {"image": "<image>", "video": "<video>", "sound": "<sound>"}


@st.composite
def _plausible_record(draw: st.DrawFn) -> dict:
    """A record that is well-formed except for what the strategies vary (text, media path)."""
    key = draw(st.sampled_from([*MEDIA, None]))
    question = draw(_text) + " " + draw(st.text(max_size=20))
    answer = draw(st.one_of(_text, st.just("a [0.1, 0.2, 0.5, 0.6] b")))
    record = {"id": draw(st.text(max_size=5)), "conversations": [
        {"from": "human", "value": (_PH[key] + "\n" if key else "") + question},
        {"from": "gpt", "value": answer},
    ]}  # fmt: skip
    if key:
        record[key] = draw(st.one_of(st.just(MEDIA[key]), _media_value))
    task = draw(st.sampled_from([None, "chat", "rec", "vtg"]))
    if task:
        record["task"] = task
    return record


_media_bytes = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: _PNG[: len(_PNG) // 2] + b),
    st.binary(max_size=64).map(lambda b: _PNG + b),
)


_wav_bytes = st.one_of(st.binary(max_size=512), st.sampled_from(_WAVS))


@pytest.fixture(scope="module")
def outcomes() -> Iterator[Counter]:
    """``valid`` or the skip reason of every example, printed at the end (visible with -s)."""
    counter: Counter = Counter()
    yield counter
    if counter:
        skips = sum(n for k, n in counter.items() if k != "valid")
        per_reason = ", ".join(f"{k}={n}" for k, n in counter.most_common() if k != "valid")
        print(
            f"\ndataset fuzz: {sum(counter.values())} examples, {counter['valid']} valid "
            f"samples, {skips} skips: {per_reason}"
        )


def _sample_or_skip(dataset_parts, record: dict, png: bytes, mp4: bytes, wav: bytes) -> str:
    """Build the one-record dataset's item; check it is a sample or a well-formed skip."""
    formatter, processors = dataset_parts
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in zip(MEDIA.values(), (png, mp4, wav), strict=True):
            (root / name).write_bytes(data)
        (root / "ann.json").write_text(json.dumps([record]))
        ds = ConversationDataset(root / "ann.json", root, formatter, processors, 64, name="p")
        item = ds[0]
    if "skipped" in item:
        assert REASON.fullmatch(item["skipped"]), item
        assert item["dataset"] == "p" and item["index"] == 0 and isinstance(item["detail"], str)
        return item["skipped"]
    assert item["input_ids"] and len(item["input_ids"]) == len(item["labels"]) <= 64
    assert all(torch.isfinite(x).all() for x in item["media"].values())
    return "valid"


_GIVEN = given(
    record=st.one_of(_plausible_record(), _record),
    png=_media_bytes,
    mp4=st.binary(max_size=512),
    wav=_wav_bytes,
)
_SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=50, **_SETTINGS)
@_GIVEN
def test_any_record_and_media_give_a_sample_or_a_counted_skip(
    dataset_parts, outcomes: Counter, record: dict, png: bytes, mp4: bytes, wav: bytes
) -> None:
    outcomes[_sample_or_skip(dataset_parts, record, png, mp4, wav)] += 1


@pytest.mark.slow
@settings(max_examples=2000, **_SETTINGS)
@_GIVEN
def test_any_record_and_media_give_a_sample_or_a_counted_skip_many(
    dataset_parts, outcomes: Counter, record: dict, png: bytes, mp4: bytes, wav: bytes
) -> None:
    outcomes[_sample_or_skip(dataset_parts, record, png, mp4, wav)] += 1
