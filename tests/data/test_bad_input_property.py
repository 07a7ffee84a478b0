"""Property: whatever a record or a media file holds, a dataset item is a sample or a counted skip."""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from groundinggpt.data.conversation import SPECIAL_TOKENS, ConversationFormatter, modality_specs
from groundinggpt.data.dataset import ConversationDataset
from groundinggpt.data.media import AudioProcessor, ImageProcessor, VideoProcessor
from groundinggpt.data.tokenizer import build_tokenizer

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


_PNG = _png_prefix()
_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<image>\nq", "<video>\nq", "<sound>\nq", "<image>", "<depth>", "a"]),
    st.sampled_from(["[0.1, 0.2, 0.5, 0.6]", "[0.5,0.2,0.1,0.6]", "{0.1, 0.4}", "[nan,1]"]),
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
    return record


_media_bytes = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: _PNG[: len(_PNG) // 2] + b),
    st.binary(max_size=64).map(lambda b: _PNG + b),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record=st.one_of(_plausible_record(), _record),
    png=_media_bytes,
    mp4=st.binary(max_size=512),
    wav=st.binary(max_size=512),
)
def test_any_record_and_media_give_a_sample_or_a_counted_skip(
    dataset_parts, record: dict, png: bytes, mp4: bytes, wav: bytes
) -> None:
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
    else:
        assert item["input_ids"] and len(item["input_ids"]) == len(item["labels"]) <= 64
        assert all(torch.isfinite(x).all() for x in item["media"].values())
