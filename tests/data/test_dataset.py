"""Records in the released format -> samples, and the bad-input policy (skip-and-count / raise)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from groundinggpt.data.conversation import IGNORE_INDEX
from groundinggpt.data.dataset import ConversationDataset, GroundingCollator, SampleError

BOX = "[0.100, 0.200, 0.500, 0.600]"


@pytest.fixture(scope="module")
def media(tmp_path_factory, files) -> Path:
    """Good and bad media files, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("media")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(files.SR) / files.SR)
    files.image(root / "ok.png")
    files.image(root / "gray.png", "L")
    files.mp4(root / "ok.mp4", 6, audio=tone)
    files.mp4(root / "mute.mp4", 6)
    files.wav(root / "ok.wav", tone)
    files.audio(root / "ok.flac", tone)
    files.wav(root / "nosamples.wav", np.zeros(0))
    (root / "junk.png").write_bytes(b"not an image")
    (root / "junk.mp4").write_bytes(b"\x00junk" * 20)
    (root / "junk.wav").write_bytes(b"RIFFjunk")
    (root / "zero.mp4").write_bytes(b"")
    png = (root / "ok.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    mp4 = (root / "ok.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    return root


def _dataset(tmp_path, media, formatter, processors, records, **kwargs) -> ConversationDataset:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(records))
    kwargs.setdefault("max_length", 256)
    return ConversationDataset(path, media, formatter, processors, name="t", **kwargs)


def _conv(*values: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def _rec(conversations: list[dict], **media: str) -> dict:
    return {"id": "x", **media, "conversations": conversations}


# (record, reason, the file the skip names)
BAD = {
    "missing_file": (_rec(_conv("<image>\nq", BOX), image="nope.png"), "missing_file", "nope.png"),
    "unreadable_image": (_rec(_conv("<image>\nq", BOX), image="junk.png"), "unreadable_image", "junk.png"),
    "truncated_image": (_rec(_conv("<image>\nq", BOX), image="truncated.png"), "unreadable_image", "truncated.png"),
    "unreadable_video": (_rec(_conv("<video>\nq", "{0.10, 0.20}"), video="junk.mp4"), "unreadable_video", "junk.mp4"),
    "truncated_video": (_rec(_conv("<video>\nq", "{0.10, 0.20}"), video="truncated.mp4"), "unreadable_video", "truncated.mp4"),
    "zero_length_video": (_rec(_conv("<video>\nq", "{0.10, 0.20}"), video="zero.mp4"), "empty_video", "zero.mp4"),
    "unreadable_audio": (_rec(_conv("<sound>\nq", "a tone"), sound="junk.wav"), "unreadable_audio", "junk.wav"),
    "audio_without_samples": (_rec(_conv("<sound>\nq", "a tone"), sound="nosamples.wav"), "empty_audio", "nosamples.wav"),
    "video_without_audio_track": (_rec(_conv("<sound>\nq", "a tone"), sound="mute.mp4"), "no_audio_track", "mute.mp4"),
    "no_conversations": ({"id": "x", "image": "ok.png"}, "no_conversation", "ann.json[0]"),
    "too_many_placeholders": (_rec(_conv("<image>\n<image>\nq", BOX), image="ok.png"), "placeholder_mismatch", "ann.json[0]"),
    "placeholder_without_media": (_rec(_conv("<video>\nq", "{0.10, 0.20}")), "placeholder_mismatch", "ann.json[0]"),
    "media_without_placeholder": (_rec(_conv("q", BOX), image="ok.png"), "media_without_placeholder", "ann.json[0]"),
    "box_reversed": (_rec(_conv("<image>\nq", "[0.5, 0.2, 0.1, 0.6]"), image="ok.png"), "box_reversed", "ann.json[0]"),
    "box_over_one": (_rec(_conv("<image>\nq", "[0.1, 0.2, 1.5, 0.6]"), image="ok.png"), "box_out_of_range", "ann.json[0]"),
    "box_nan": (_rec(_conv("<image>\nq", "[0.1, NaN, 0.5, 0.6]"), image="ok.png"), "box_not_finite", "ann.json[0]"),
    "span_end_before_start": (_rec(_conv("<video>\nq", "{0.70, 0.20}"), video="ok.mp4"), "span_end_before_start", "ann.json[0]"),
    "span_over_one": (_rec(_conv("<video>\nq", "{0.70, 1.20}"), video="ok.mp4"), "span_out_of_range", "ann.json[0]"),
    "unknown_modality_key": (_rec(_conv("q", "a"), depth="d.png"), "unknown_modality", "ann.json[0]"),
    "unknown_placeholder": (_rec(_conv("<depth>\nq", "a")), "unknown_modality", "ann.json[0]"),
    "empty_answer": (_rec(_conv("<image>\nq", "  "), image="ok.png"), "empty_answer", "ann.json[0]"),
    "answer_after_max_length": (_rec(_conv("<image>\n" + "word " * 200, BOX), image="ok.png"), "too_long", "ann.json[0]"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_skipped_and_counted(tmp_path, media, formatter, processors, case) -> None:
    record, reason, where = BAD[case]
    good = _rec(_conv("<image>\nq", BOX), image="ok.png")
    ds = _dataset(tmp_path, media, formatter, processors, [record, good], max_length=64)
    skipped = ds[0]
    assert skipped["skipped"] == reason, skipped
    assert skipped["dataset"] == "t" and skipped["id"] == "x" and skipped["index"] == 0
    assert skipped["file"].endswith(where)
    batch = GroundingCollator(0)([ds[0], ds[1]])
    assert batch["skipped"] == [reason] and batch["size"] == 1
    assert batch["skipped_info"][0]["file"].endswith(where)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_in_strict_mode(tmp_path, media, formatter, processors, case) -> None:
    record, reason, where = BAD[case]
    ds = _dataset(tmp_path, media, formatter, processors, [record], on_error="raise", max_length=64)
    with pytest.raises(SampleError, match=r"ann\.json\[0\]") as err:
        ds[0]
    assert err.value.kind == reason


def test_non_utf8_record_is_skipped(tmp_path, media, formatter, processors) -> None:
    good = json.dumps(_rec(_conv("q", "a"))).encode()
    (tmp_path / "a.jsonl").write_bytes(good + b'\n{"id": "b", "conversations": "\xff\xfe"}\n')
    ds = ConversationDataset(tmp_path / "a.jsonl", media, formatter, processors, 64)
    assert "skipped" not in ds[0]
    assert ds[1]["skipped"] == "non_utf8" and ds[1]["id"] == "1"
    strict = ConversationDataset(
        tmp_path / "a.jsonl", media, formatter, processors, 64, on_error="raise"
    )
    with pytest.raises(SampleError, match="UTF-8"):
        strict[1]


def test_every_modality_and_several_per_record(tmp_path, media, formatter, processors) -> None:
    records = [
        _rec(_conv("<image>\nq", BOX), image="gray.png"),
        _rec(_conv("<video>\nq", "{0.10, 0.20}"), video="ok.mp4"),
        _rec(_conv("<sound>\nq", "a tone"), sound="ok.flac"),
        _rec(_conv("<video>\nq", "a tone"), video="ok.mp4"),
        _rec(_conv("<image>\n<sound>\nwhere", BOX), image="ok.png", sound="ok.mp4"),
        _rec(_conv("hello", "hi", "and?", "bye")),
    ]
    ds = _dataset(tmp_path, media, formatter, processors, records)
    samples = [ds[i] for i in range(len(ds))]
    assert all("skipped" not in s for s in samples)
    assert samples[0]["media"]["image"].shape == (3, 8, 8)
    assert samples[1]["media"]["video"].shape == (2, 3, 8, 8)
    assert samples[2]["media"]["audio"].shape == (3, 1, 128, 204)
    assert set(samples[4]["media"]) == {"image", "audio"}
    assert samples[5]["media"] == {}
    batch = GroundingCollator(0)(samples)
    assert batch["media"]["image"].shape[0] == 2 and batch["media"]["video"].shape[0] == 2
    assert batch["input_ids"].shape[0] == 6 and batch["truncated"] == [False] * 6


def test_media_roots_per_modality(tmp_path, media, formatter, processors) -> None:
    records = [
        _rec(_conv("<image>\nq", BOX), image="ok.png"),
        _rec(_conv("<sound>\nq", "a tone"), sound="ok.wav"),
    ]
    roots = {"image": media, "video": tmp_path / "nowhere", "audio": media}
    ds = _dataset(tmp_path, roots, formatter, processors, records)
    assert ds[0]["media_paths"]["image"] == str(media / "ok.png")
    assert "skipped" not in ds[1]
    with pytest.raises(ValueError, match="no folder for modalities"):
        _dataset(tmp_path, {"image": media}, formatter, processors, records)


def test_long_conversation_keeps_the_whole_turns_that_fit(
    tmp_path, media, formatter, processors
) -> None:
    record = _rec(_conv("<image>\nq", BOX, "more?", "a " * 100), image="ok.png")
    full = _dataset(tmp_path, media, formatter, processors, [record], max_length=1000)[0]
    cut = _dataset(tmp_path, media, formatter, processors, [record], max_length=60)[0]
    assert len(full["input_ids"]) > 60 and not full["truncated"]
    assert cut["truncated"] and len(cut["input_ids"]) == len(cut["labels"]) <= 60
    assert cut["input_ids"] == full["input_ids"][: len(cut["input_ids"])]
    eos = formatter.tokenizer.eos_token_id
    assert cut["input_ids"][-1] == eos and cut["labels"][-1] == eos  # ends on the first answer
    answer = [
        t for t, lab in zip(cut["input_ids"], cut["labels"], strict=True) if lab != IGNORE_INDEX
    ]
    assert formatter.tokenizer.decode(answer, skip_special_tokens=True).strip() == BOX
    assert cut["media"]["image"].shape == (3, 8, 8)
    # the first answer itself does not fit: the record is skipped, never trained half-cut
    first_end = len(cut["input_ids"])
    too_short = _dataset(tmp_path, media, formatter, processors, [record], max_length=first_end - 1)
    assert too_short[0]["skipped"] == "too_long"


def test_media_in_a_dropped_turn_skips_the_record(tmp_path, media, formatter, processors) -> None:
    record = _rec(_conv("q", "a", "<image>\n" + "b " * 50, BOX), image="ok.png")
    ds = _dataset(tmp_path, media, formatter, processors, [record], max_length=30)
    assert ds[0]["skipped"] == "too_long" and "media block" in ds[0]["detail"]


def test_skip_counts_over_a_loader(tmp_path, media, formatter, processors) -> None:
    """The collated batches report every skip with its reason: nothing is dropped silently."""
    records = [BAD[c][0] for c in ("missing_file", "box_reversed", "empty_answer")] * 2
    records += [_rec(_conv("<image>\nq", BOX), image="ok.png")] * 4
    ds = _dataset(tmp_path, media, formatter, processors, records)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=GroundingCollator(0))
    counts, size = Counter(), 0
    for batch in loader:
        counts.update(batch["skipped"])
        size += batch["size"]
    assert size == 4
    assert counts == {"missing_file": 2, "box_reversed": 2, "empty_answer": 2}
