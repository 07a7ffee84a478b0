"""Hostile input: oversized or broken media, paths leaving the media root, whole annotation
files that hold no records, absurdly nested records and placeholders in answers."""

from __future__ import annotations

import codecs
import io
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groundinggpt.data.dataset import (
    AnnotationFileError,
    ConversationDataset,
    GroundingCollator,
    SampleError,
)
from groundinggpt.data.media import (
    AudioProcessor,
    ImageProcessor,
    MediaError,
    VideoProcessor,
    confined_path,
)
from groundinggpt.data.records import RecordStore
from groundinggpt.data.validation import check_modalities

BOX = "[0.100, 0.200, 0.500, 0.600]"


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose IHDR claims ``width x height`` (CRC fixed): tiny on disk."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _image_record(image: str, answer: str = BOX) -> dict:
    convs = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": answer}]
    return {"id": "x", "image": image, "conversations": convs}


def _dataset(tmp_path, root, formatter, processors, records, **kwargs) -> ConversationDataset:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(records))
    return ConversationDataset(path, root, formatter, processors, 64, name="t", **kwargs)


# ------------------------------------------------------------------------------ image limits


@pytest.mark.parametrize(
    ("size", "kind"),
    [
        ((20000, 20000), "image_too_large"),  # past PIL's own bomb limit: refused in open()
        ((7000, 7000), "image_too_large"),  # 49 M pixels: refused by the header check
        ((16000, 1), "extreme_aspect_ratio"),
        ((1, 16000), "extreme_aspect_ratio"),
    ],
)
def test_oversized_images_are_refused_from_the_header(tmp_path: Path, size, kind) -> None:
    path = png_declaring(tmp_path / "big.png", *size)
    start = time.perf_counter()
    with pytest.raises(MediaError, match="big.png") as err:
        ImageProcessor(size=8)(path)
    assert err.value.kind == kind
    assert time.perf_counter() - start < 0.5  # nothing of that size was decoded


def test_oversized_image_is_a_counted_skip(tmp_path, formatter, processors) -> None:
    png_declaring(tmp_path / "big.png", 20000, 20000)
    Image.new("1", (16000, 1)).save(tmp_path / "wide.png")  # a real file, small on disk
    Image.new("RGB", (20, 10), "red").save(tmp_path / "ok.png")
    records = [_image_record("big.png"), _image_record("wide.png"), _image_record("ok.png")]
    ds = _dataset(tmp_path, tmp_path, formatter, processors, records)
    start = time.perf_counter()
    batch = GroundingCollator(0)([ds[i] for i in range(3)])
    assert time.perf_counter() - start < 1.0
    assert batch["skipped"] == ["image_too_large", "extreme_aspect_ratio"] and batch["size"] == 1
    assert batch["skipped_info"][0]["file"].endswith("big.png")


def test_image_limits_are_configurable(tmp_path: Path) -> None:
    Image.new("RGB", (50, 20), "red").save(tmp_path / "a.png")
    assert ImageProcessor(size=8)(tmp_path / "a.png").shape == (3, 8, 8)
    with pytest.raises(MediaError) as err:
        ImageProcessor(size=8, max_aspect_ratio=2.0)(tmp_path / "a.png")
    assert err.value.kind == "extreme_aspect_ratio"
    with pytest.raises(MediaError) as err:
        ImageProcessor(size=8, max_pixels=999)(tmp_path / "a.png")
    assert err.value.kind == "image_too_large"
    assert ImageProcessor(size=8, max_pixels=None, max_aspect_ratio=None)(tmp_path / "a.png").ndim
    with pytest.raises(ValueError, match="max_pixels"):
        ImageProcessor(max_pixels=0)


def test_decompression_bomb_warning_is_a_skip_not_a_warning(tmp_path, monkeypatch) -> None:
    Image.new("RGB", (50, 30)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1500 px: PIL warns, not raises
    with pytest.raises(MediaError) as err:
        ImageProcessor(size=8, max_pixels=None)(tmp_path / "a.png")
    assert err.value.kind == "image_too_large"


# ------------------------------------------------------------------------- error boundary


class _Boom(Exception):
    pass


def _raise(*_, **__):
    raise _Boom("decoder exploded")


def test_any_image_decoder_failure_is_a_media_error(tmp_path, monkeypatch) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image.Image, "resize", _raise)
    with pytest.raises(MediaError, match="_Boom: decoder exploded") as err:
        ImageProcessor(size=8)(tmp_path / "a.png")
    assert err.value.kind == "unreadable_image" and err.value.path.endswith("a.png")
    with pytest.raises(MediaError):  # the encoder's own image processor, too
        ImageProcessor(processor=_raise)(tmp_path / "a.png")


def test_any_video_or_audio_failure_is_a_media_error(tmp_path, files, monkeypatch) -> None:
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(files.SR) / files.SR)
    files.mp4(tmp_path / "v.mp4", 4)
    files.wav(tmp_path / "s.wav", tone)
    monkeypatch.setattr(VideoProcessor, "_resize", _raise)
    monkeypatch.setattr(AudioProcessor, "_melspec", _raise)
    with pytest.raises(MediaError) as err:
        VideoProcessor(num_frames=2, size=8)(tmp_path / "v.mp4")
    assert err.value.kind == "unreadable_video"
    with pytest.raises(MediaError) as err:
        AudioProcessor()(tmp_path / "s.wav")
    assert err.value.kind == "unreadable_audio"


# --------------------------------------------------------------------------- confinement


@pytest.fixture()
def rooted(tmp_path: Path) -> tuple[Path, Path]:
    """``root/ok.png``, ``outside/x.png`` and ``root/link.png -> outside/x.png``."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    Image.new("RGB", (20, 10)).save(root / "ok.png")
    Image.new("RGB", (20, 10)).save(outside / "x.png")
    (root / "link.png").symlink_to(outside / "x.png")
    return root, outside


def test_media_paths_must_stay_inside_the_root(tmp_path, rooted, formatter, processors) -> None:
    root, outside = rooted
    names = ["../outside/x.png", str(outside / "x.png"), "link.png", "sub/../../outside/x.png"]
    records = [_image_record(n) for n in names]
    records += [_image_record("ok.png"), _image_record(str(root / "ok.png"))]
    ds = _dataset(tmp_path, root, formatter, processors, records)
    reasons = [ds[i].get("skipped") for i in range(len(ds))]
    assert reasons == ["path_outside_root"] * 4 + [None, None]
    assert ds[0]["file"].endswith("x.png") and "outside the media root" in ds[0]["detail"]
    strict = _dataset(tmp_path, root, formatter, processors, records, on_error="raise")
    with pytest.raises(SampleError) as err:
        strict[2]
    assert err.value.kind == "path_outside_root"


def test_absolute_media_paths_can_be_allowed(tmp_path, rooted, formatter, processors) -> None:
    root, outside = rooted
    records = [_image_record(str(outside / "x.png")), _image_record("link.png")]
    ds = _dataset(tmp_path, root, formatter, processors, records, allow_absolute_media_paths=True)
    assert all("skipped" not in ds[i] for i in range(2))


def test_confined_path_lexical_mode_accepts_symlink_farms(rooted) -> None:
    root, _ = rooted
    assert confined_path(root, "link.png", resolve_links=False) == root / "link.png"
    with pytest.raises(MediaError):
        confined_path(root, "../outside/x.png", resolve_links=False)


# ------------------------------------------------------------------- whole annotation files

WRONG_FILES = {
    "wrapper_object_pretty": (
        json.dumps({"data": [{"id": 1, "conversations": []}]}, indent=2).encode(),
        "not_a_record_list",
    ),
    "wrapper_object_one_line": (
        json.dumps({"data": [{"id": 1, "conversations": []}]}).encode(),
        "not_a_record_list",
    ),
    "top_level_string": (b'"records"', "not_a_record_list"),
    "utf16_with_bom": (json.dumps([{"id": 1}]).encode("utf-16"), "not_utf8_annotation_file"),
    "utf16_without_bom": (json.dumps([{"id": 1}]).encode("utf-16-le"), "not_utf8_annotation_file"),
    "utf32_with_bom": (
        codecs.BOM_UTF32_LE + json.dumps([{"id": 1}]).encode("utf-32-le"),
        "not_utf8_annotation_file",
    ),
    "empty": (b"", "empty_annotation_file"),
    "whitespace_only": (b"\n \n\t\n", "empty_annotation_file"),
    "empty_list": (b"[ ]", "empty_annotation_file"),
    "unclosed_list": (b'[{"id": 1}, {"id": ', "broken_json_list"),
}


@pytest.mark.parametrize("case", list(WRONG_FILES))
def test_files_without_records_fail_when_the_dataset_is_built(
    tmp_path, formatter, processors, case
) -> None:
    content, kind = WRONG_FILES[case]
    (tmp_path / "ann.json").write_bytes(content)
    with pytest.raises(AnnotationFileError, match=r"ann\.json") as err:
        ConversationDataset(tmp_path / "ann.json", tmp_path, formatter, processors, 64)
    assert err.value.kind == kind and err.value.path.endswith("ann.json")


def test_jsonl_with_one_record_is_still_a_record_file(tmp_path: Path) -> None:
    record = {"id": "a", "conversations": [{"from": "human", "value": "q"}]}
    (tmp_path / "a.jsonl").write_text(json.dumps(record) + "\n")
    assert list(RecordStore(tmp_path / "a.jsonl")) == [record]


def _deep(depth: int) -> str:
    return '{"id": "deep", "conversations": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("jsonl", [False, True])
def test_absurdly_nested_record_is_a_counted_skip(tmp_path, formatter, processors, jsonl) -> None:
    good = json.dumps(
        {
            "id": "g",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
        }
    )
    deep = _deep(100_000)
    text = f"{deep}\n{good}\n" if jsonl else f"[{deep}, {good}]"
    (tmp_path / "ann.json").write_text(text)
    store = RecordStore(tmp_path / "ann.json")
    assert len(store) == 2 and store[1]["id"] == "g"
    with pytest.raises(SampleError, match="nested deeper") as err:
        store[0]
    assert err.value.kind == "malformed_record"
    ds = ConversationDataset(tmp_path / "ann.json", tmp_path, formatter, processors, 64)
    assert ds[0]["skipped"] == "malformed_record" and "skipped" not in ds[1]


def test_nested_record_with_brackets_in_strings_is_cut_correctly(tmp_path: Path) -> None:
    deep = '{"id": "d", "s": "]}\\"[{", "c": ' + "[" * 5000 + "]" * 5000 + "}"
    (tmp_path / "a.json").write_text(f'[{deep}, {{"id": "after"}}]')
    store = RecordStore(tmp_path / "a.json")
    assert len(store) == 2 and store[1] == {"id": "after"}


# ------------------------------------------------------------------ placeholders in answers


@pytest.mark.parametrize("answer", ["<image> a dog", "a dog <video>", "it sounds like <sound>"])
def test_placeholder_in_an_answer_is_rejected(answer: str) -> None:
    record = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": answer}]}
    with pytest.raises(SampleError, match="turn 1") as err:
        check_modalities(record, {"image", "video", "sound"}, {"<image>", "<video>", "<sound>"})
    assert err.value.kind == "placeholder_in_answer"


def test_placeholder_only_in_the_answer_is_a_counted_skip(tmp_path, formatter, processors) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "ok.png")
    record = {
        "id": "x",
        "image": "ok.png",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<image> a"}],
    }
    ds = _dataset(tmp_path, tmp_path, formatter, processors, [record])
    assert ds[0]["skipped"] == "placeholder_in_answer"


# ----------------------------------------------------------------------- benchmark readers


def test_benchmark_media_names_must_stay_inside_the_media_dir(tmp_path: Path) -> None:
    from groundinggpt.evaluation.benchmarks import load_benchmark

    images = tmp_path / "images"
    images.mkdir()
    rows = [{"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"}]
    pope = tmp_path / "coco_pope_random.json"
    pope.write_text(json.dumps(rows[0]) + "\n")
    assert load_benchmark("pope", pope, images)[0].media["image"] == str(images / "a.jpg")
    for name in ("../secret.jpg", "/etc/passwd"):
        pope.write_text(json.dumps({**rows[0], "image": name}) + "\n")
        with pytest.raises(ValueError, match="leads outside"):
            load_benchmark("pope", pope, images)
    charades = tmp_path / "charades_sta_test.txt"
    charades.write_text("../../x 0.0 1.0##a person sits\n")
    with pytest.raises(ValueError, match=r"charades_sta_test\.txt:1.*leads outside"):
        load_benchmark("charades_sta", charades, images)
