"""Tests of the benchmark readers on tiny fixtures in each official format."""

from __future__ import annotations

import inspect
import io
import json
import logging
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tests.conftest import CONFIG_DIR, compose_config
from tests.evaluation.fixtures import (
    CHARADES_VIDEOS,
    REFER_IMAGES,
    REFER_REFS,
    VGGSS_SIZES,
    write_charades,
    write_image,
    write_jsonl,
    write_pope,
    write_refer,
    write_synthetic,
    write_vggss,
)

from groundinggpt.data.media import MediaError
from groundinggpt.evaluation.benchmarks import (
    BENCHMARK_TASKS,
    DEFAULT_PROMPTS,
    BenchmarkSample,
    complete_meta,
    fill_prompt,
    load_benchmark,
)
from groundinggpt.evaluation.refer import PlainUnpickler, load_plain_pickle

# --- refer toolkit pickle ---------------------------------------------------------------------


def test_refer_pickle_one_sample_per_expression(tmp_path: Path) -> None:
    refs, images = write_refer(tmp_path)
    samples = load_benchmark("refcoco", refs, images, split="val")
    assert [s.id for s in samples] == ["0_0", "0_1", "1_2"]  # per expression, not per image
    first = samples[0]
    assert first.task == "rec"
    assert first.target == [4.0, 6.0, 24.0, 16.0]  # COCO [x, y, w, h] -> corners
    assert samples[2].target == [30.0, 0.0, 64.0, 40.0]
    assert first.media == {"image": str(images.absolute() / REFER_IMAGES[11][0])}
    assert Path(first.media["image"]).is_absolute()
    assert first.question == "<image>\nOutput the coordinate of left dog."
    assert (first.meta["width"], first.meta["height"]) == (64, 40)
    assert (first.meta["ref_id"], first.meta["sent_id"], first.meta["ann_id"]) == (0, 0, 101)
    test_a = load_benchmark("refcoco", refs.parent, images, split="testA")  # folder works too
    assert [s.id for s in test_a] == ["2_3"] and test_a[0].target == [0.0, 10.0, 15.0, 35.0]


def test_refer_split_errors(tmp_path: Path) -> None:
    refs, images = write_refer(tmp_path)
    with pytest.raises(ValueError, match="testB.*available.*testA.*val"):
        load_benchmark("refcoco", refs, images, split="testB")
    with pytest.raises(ValueError, match="choose a split"):
        load_benchmark("refcoco", refs, images, split=None)
    (refs.parent / "instances.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances.json"):
        load_benchmark("refcoco", refs, images, split="val")


class _Touch:
    """Unpickling this would create a file: the unpickler must refuse before that."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_unsafe_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "refs(unc).p"
    bad.write_bytes(pickle.dumps([{"ref_id": 0, "x": _Touch(marker)}]))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_plain_pickle(bad)
    assert not marker.exists()
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(pickle.UnpicklingError):
        load_benchmark("refcoco", bad, tmp_path, split="val")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # even harmless classes: no lookups at all
        PlainUnpickler(io.BytesIO(pickle.dumps(OrderedDict(a=1)))).load()


def test_plain_pickle_reads_python2_strings(tmp_path: Path) -> None:
    # Protocol-2 SHORT_BINSTRING opcodes, as Python 2 writes `str`: b"caf\xc3\xa9" (UTF-8).
    raw = b"\x80\x02]q\x00U\x05caf\xc3\xa9q\x01a."
    (tmp_path / "p.p").write_bytes(raw)
    assert load_plain_pickle(tmp_path / "p.p") == ["café"]
    # Protocol 0, Python 2's default for pickle.dump: text opcodes, still no lookups.
    (tmp_path / "p0.p").write_bytes(pickle.dumps(REFER_REFS, protocol=0))
    assert load_plain_pickle(tmp_path / "p0.p") == REFER_REFS


# --- REC JSON exports -------------------------------------------------------------------------


def test_rec_jsonl_export_field_names_and_box_formats(tmp_path: Path) -> None:
    rows = [
        {"image": "a.jpg", "sentence": "the cat.", "bbox": [1, 2, 3, 4], "width": 10,
         "height": 8, "ref_id": 7, "sent_id": 70},
        {"img_path": "b.jpg", "expression": "dog", "bbox_xyxy": [1, 2, 3, 4], "id": "q1"},
        {"file_name": "c.jpg", "sentences": [{"sent_id": 5, "sent": "x"}, "y"],
         "bbox": [1, 1, 2, 2], "bbox_format": "xyxy", "id": 9},
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "refcoco_val.jsonl", rows)
    samples = load_benchmark("refcoco", path, tmp_path / "img")
    assert [s.id for s in samples] == ["7_70", "q1", "9_5", "9_1"]
    assert samples[0].target == [1.0, 2.0, 4.0, 6.0]  # xywh by default
    assert samples[0].question == "<image>\nOutput the coordinate of the cat."
    assert (samples[0].meta["width"], samples[0].meta["height"]) == (10, 8)
    assert samples[1].target == [1.0, 2.0, 3.0, 4.0] and samples[1].meta["width"] is None
    assert samples[2].target == samples[3].target == [1.0, 1.0, 2.0, 2.0]
    assert samples[1].media["image"] == str((tmp_path / "img" / "b.jpg").absolute())
    as_xyxy = load_benchmark("refcoco", path, tmp_path, box_format="xyxy")
    assert as_xyxy[0].target == [1.0, 2.0, 3.0, 4.0]


def test_rec_export_split_field_and_wrong_box_format(tmp_path: Path) -> None:
    rows = [{"image": "a.jpg", "text": "a", "bbox": [0, 0, 2, 2], "split": s, "id": i}
            for i, s in enumerate(["val", "testA", "val"])]  # fmt: skip
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    assert [s.id for s in load_benchmark("refcoco", path, tmp_path, split="val")] == ["0", "2"]
    with pytest.raises(ValueError, match="no split 'testB'"):
        load_benchmark("refcoco", path, tmp_path, split="testB")
    # An [x0, y0, x1, y1] box read as [x, y, w, h] leaves the image: a clear error.
    xyxy = [{"image": "a.jpg", "text": "a", "bbox": [30, 10, 60, 40], "width": 64, "height": 48}]
    with pytest.raises(ValueError, match="does not fit the 64x48 image.*box_format=xyxy"):
        load_benchmark("refcoco", write_jsonl(tmp_path / "x.jsonl", xyxy), tmp_path)
    no_text = [{"image": "a.jpg", "bbox": [0, 0, 1, 1]}]
    with pytest.raises(ValueError, match="no expression field"):
        load_benchmark("refcoco", write_jsonl(tmp_path / "n.jsonl", no_text), tmp_path)


def test_rec_mdetr_style_coco_file(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 5, "file_name": "COCO_1.jpg", "caption": "the man", "width": 20,
                    "height": 10, "original_id": 1}],
        "annotations": [{"id": 1, "image_id": 5, "bbox": [2, 3, 4, 5]}],
    }  # fmt: skip
    (tmp_path / "final_refcoco_testA.json").write_text(json.dumps(data))
    (s,) = load_benchmark("refcoco", tmp_path / "final_refcoco_testA.json", tmp_path)
    assert (s.id, s.target, s.meta["width"]) == ("5", [2.0, 3.0, 6.0, 8.0], 20)


# --- Charades-STA -----------------------------------------------------------------------------


def test_charades_reader_and_durations(tmp_path: Path, caplog) -> None:
    txt, videos = write_charades(tmp_path / "charades")
    with caplog.at_level(logging.WARNING):
        samples = load_benchmark("charades_sta", txt, videos)
    assert "1 lines had start > end" in caplog.text
    assert [s.id for s in samples] == ["AO8RW_1", "AO8RW_2", "Y6R7T_4"]
    assert samples[0].target == [0.0, 0.9] and samples[2].target == [0.4, 1.2]
    assert samples[0].question == (
        '<video>\nWhen does "a person is putting a book on a shelf" happen in the video? '
        "Answer with a time span."
    )
    assert samples[0].meta["duration"] is None  # read later, in the workers
    full = complete_meta(samples[2])
    assert full.meta["duration"] == pytest.approx(CHARADES_VIDEOS["Y6R7T"] / 8)
    assert samples[2].meta["duration"] is None  # the input sample is not changed
    assert full.reference() == "{0.20, 0.60}"


def test_charades_bad_line_names_the_line(tmp_path: Path) -> None:
    txt = tmp_path / "charades_sta_test.txt"
    txt.write_text("AO8RW 0.0 6.9##ok\nAO8RW zero 6.9##bad\n")
    with pytest.raises(ValueError, match=r"charades_sta_test.txt:2"):
        load_benchmark("charades_sta", txt, tmp_path)
    txt.write_text("AO8RW 0.0 6.9 no separator\n")
    with pytest.raises(ValueError, match="VIDEOID start end##sentence"):
        load_benchmark("charades_sta", txt, tmp_path)


# --- POPE -------------------------------------------------------------------------------------


def test_pope_categories_ids_and_labels(tmp_path: Path) -> None:
    folder, images = write_pope(tmp_path)
    adv = load_benchmark("pope", folder, images, split="adversarial")
    assert [s.id for s in adv] == ["1", "2", "3", "4", "5", "6"]
    assert [s.target for s in adv] == ["no", "yes", "no", "yes", "no", "yes"]
    assert adv[0].question == "<image>\nIs there a adversarial thing 1?"
    assert adv[0].meta["category"] == "adversarial"
    assert adv[0].media["image"] == str(images.absolute() / "img_1.jpg")
    one_file = load_benchmark("pope", folder / "coco_pope_random.json", images)
    assert len(one_file) == 4 and one_file[0].id == "1"
    everything = load_benchmark("pope", folder, images)
    assert len(everything) == 4 + 5 + 6
    assert {s.id.split("_")[0] for s in everything} == {"random", "popular", "adversarial"}
    with pytest.raises(ValueError, match="POPE split"):
        load_benchmark("pope", folder, images, split="testA")


def test_pope_without_labels_is_a_clear_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "llava_pope_test.jsonl",
                       [{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?",
                         "category": "random"}])  # fmt: skip
    with pytest.raises(ValueError, match="label"):
        load_benchmark("pope", path, tmp_path)


# --- VGGSS ------------------------------------------------------------------------------------


def test_vggss_reader_targets_in_original_pixels(tmp_path: Path) -> None:
    ann, frames, audio = write_vggss(tmp_path / "vggss")
    samples = load_benchmark("vggss", ann, frames, audio_dir=audio)
    assert [s.id for s in samples] == ["clip_a", "clip_b"]
    a = samples[0]
    assert a.task == "sl" and a.target is None  # needs the image size
    assert a.media == {"image": str(frames.absolute() / "clip_a.jpg"),
                       "sound": str(audio.absolute() / "clip_a.wav")}  # fmt: skip
    assert a.question == DEFAULT_PROMPTS["sl"]
    full_a = complete_meta(a)
    assert (full_a.meta["width"], full_a.meta["height"]) == VGGSS_SIZES["clip_a"]
    assert full_a.target == pytest.approx([8.0, 8.0, 40.0, 24.0])  # fractions * (80, 40)
    full_b = complete_meta(samples[1])
    flat = [v for box in full_b.meta["boxes"] for v in box]
    assert flat == pytest.approx([0, 0, 20, 30, 10, 15, 40, 45])  # 1.02 clipped to 1
    with pytest.raises(ValueError, match="audio_dir"):
        load_benchmark("vggss", ann, frames)


def test_vggss_pixel_boxes_rejected_boxless_entries_counted(tmp_path: Path, caplog) -> None:
    ann = tmp_path / "vggss.json"
    ann.write_text(json.dumps([{"file": "x", "class": "c", "bbox": [[10, 20, 100, 200]]}]))
    with pytest.raises(ValueError, match="fractions of the frame"):
        load_benchmark("vggss", ann, tmp_path, audio_dir=tmp_path)
    ann.write_text(json.dumps([{"file": "x", "bbox": [[0, 0, 1, 1]]}, {"file": "y", "bbox": []}]))
    with caplog.at_level(logging.WARNING):
        samples = load_benchmark("vggss", ann, tmp_path, audio_dir=tmp_path)
    assert [s.id for s in samples] == ["x"] and "1 entries have no box" in caplog.text
    ann.write_text(json.dumps([{"file": "x", "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(ValueError, match="needs 'bbox'"):
        load_benchmark("vggss", ann, tmp_path, audio_dir=tmp_path)


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_records_targets_from_reference_text(tmp_path: Path) -> None:
    files = write_synthetic(tmp_path)
    samples = {s.task: s for s in load_benchmark("synthetic", files, tmp_path)}
    # Files interleave record by record: any limit keeps every task.
    two = json.loads(files[0].read_text()) * 2
    two[1] = {**two[1], "id": "rec_1"}
    (tmp_path / "rec_two.json").write_text(json.dumps(two))
    mixed = load_benchmark("synthetic", [tmp_path / "rec_two.json", files[1]], tmp_path, limit=2)
    assert [s.id for s in mixed] == ["rec_0", "vtg_0"]
    rec = samples["rec"]
    assert rec.question == "<image>\nWhere is the red square? Answer with a bounding box."
    # 100x50 image in a 100x100 square (25 px padding on top): [0.1, 0.25, 0.5, 0.75] -> pixels
    assert rec.target == pytest.approx([10.0, 0.0, 50.0, 50.0])
    assert samples["vtg"].target == pytest.approx([0.5, 1.0])  # {0.25, 0.50} of 16 / 8 s
    assert samples["pope"].target == "no"
    sl = samples["sl"]  # no size in the record: target after complete_meta
    assert sl.target is None and set(sl.media) == {"image", "sound"}
    assert complete_meta(sl).target == pytest.approx([0.0, 0.0, 50.0, 50.0])  # dx = 25
    for s in samples.values():  # the reference text survives the round trip
        full = complete_meta(s)
        record = full.to_record()
        assert record["conversations"][0]["value"] == s.question
        assert record["task"] == s.task and record["id"] == s.id
    assert complete_meta(rec).to_record()["conversations"][1]["value"] == (
        "[0.100, 0.250, 0.500, 0.750]"
    )


def test_synthetic_prompt_override_keeps_placeholders(tmp_path: Path) -> None:
    files = write_synthetic(tmp_path)
    samples = load_benchmark("synthetic", files[:2], tmp_path, prompt="Q: {query}")
    assert samples[0].question == (
        "<image>\nQ: Where is the red square? Answer with a bounding box."
    )
    assert samples[1].question == "<video>\nQ: When does the blue circle appear?"


# --- load_benchmark / complete_meta -----------------------------------------------------------


def test_load_benchmark_errors_and_limit(tmp_path: Path) -> None:
    folder, images = write_pope(tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("refclef", folder, images)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        load_benchmark("charades_sta", tmp_path / "missing.txt", images)
    assert [s.id for s in load_benchmark("pope", folder, images, split="random", limit=2)] == [
        "1",
        "2",
    ]
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("pope", folder, images, limit=-1)
    with pytest.raises(ValueError, match="lacks the placeholders"):
        load_benchmark("pope", folder, images, prompt="{query}")
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"image": "a", "text": "t", "bbox": [0, 0, 1, 1],
                                                 "id": 1}] * 2)  # fmt: skip
    with pytest.raises(ValueError, match="duplicate sample ids"):
        load_benchmark("refcoco", dup, tmp_path)


def test_complete_meta_reads_image_header_and_raises_media_error(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 33, 21)
    s = BenchmarkSample("x", "rec", {"image": str(tmp_path / "a.png")}, "<image>\nq",
                        [0, 0, 1, 1], {"width": None, "height": None})  # fmt: skip
    assert (complete_meta(s).meta["width"], complete_meta(s).meta["height"]) == (33, 21)
    s.meta.update(width=33, height=20)  # annotated size disagrees with the file
    with pytest.raises(MediaError, match="image is 33x21 but the annotation says 33x20"):
        complete_meta(s)
    missing = BenchmarkSample("y", "rec", {"image": str(tmp_path / "b.png")}, "<image>\nq",
                              [0, 0, 1, 1], {})  # fmt: skip
    with pytest.raises(MediaError, match="file not found"):
        complete_meta(missing)
    (tmp_path / "c.png").write_bytes(b"not an image")
    broken = BenchmarkSample("z", "rec", {"image": str(tmp_path / "c.png")}, "<image>\nq",
                             [0, 0, 1, 1], {})  # fmt: skip
    with pytest.raises(MediaError, match="unreadable image"):
        complete_meta(broken)
    txt, videos = write_charades(tmp_path / "ch", with_videos=False)
    with pytest.raises(MediaError):
        complete_meta(load_benchmark("charades_sta", txt, videos)[0])


def test_to_record_needs_complete_meta(tmp_path: Path) -> None:
    s = BenchmarkSample("x", "vtg", {"video": "/v.mp4"}, "<video>\nq", [1.0, 2.0], {})
    with pytest.raises(ValueError, match="complete_meta"):
        s.to_record()
    s.meta["duration"] = 4.0
    record = s.to_record()
    assert record["video"] == "/v.mp4" and record["conversations"][1]["value"] == "{0.25, 0.50}"


# --- configs/benchmark ------------------------------------------------------------------------

BENCHMARK_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "benchmark").glob("*.yaml"))


def test_every_benchmark_has_a_config() -> None:
    assert sorted(BENCHMARK_TASKS) == BENCHMARK_CONFIGS


@pytest.mark.parametrize("name", BENCHMARK_CONFIGS)
def test_benchmark_config_keys_paths_and_prompt(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"benchmark={name}"], tmp_path, tmp_path / "out", config_name="eval")
    bench = OmegaConf.to_container(cfg.benchmark, resolve=True)
    required = {"name", "annotation_file", "media_dir", "split", "prompt", "limit",
                "max_new_tokens"}  # fmt: skip
    assert required <= set(bench) and bench["name"] == name and bench["limit"] is None
    accepted = set(inspect.signature(load_benchmark).parameters) | {"max_new_tokens"}
    assert set(bench) <= accepted, set(bench) - accepted  # every key reaches the reader
    files = bench["annotation_file"]
    for path in [files] if isinstance(files, str) else files:
        assert path.startswith(str(tmp_path / "data")), path
    task = BENCHMARK_TASKS[name]
    if task is not None:
        fill_prompt(bench["prompt"], "q", task)  # carries the task's placeholders
    assert ("audio_dir" in bench) == (task in ("sl", "avs"))  # the two image + sound tasks


def test_synthetic_config_reads_the_embedded_test_split(tmp_path: Path) -> None:
    cfg = compose_config(["benchmark=synthetic"], tmp_path, tmp_path / "out", config_name="eval")
    write_synthetic(tmp_path / "data" / "synthetic")
    bench = OmegaConf.to_container(cfg.benchmark, resolve=True)
    accepted = inspect.signature(load_benchmark).parameters
    samples = load_benchmark(**{k: v for k, v in bench.items() if k in accepted})
    assert sorted(s.task for s in samples) == ["pope", "rec", "sl", "vtg"]
