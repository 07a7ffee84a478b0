"""Pixel-grounding benchmark readers (RES, GCG, AVSBench) on tiny files in the official formats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from tests.evaluation.fixtures import write_audio, write_image

from groundinggpt.data.media import MediaError
from groundinggpt.evaluation.benchmarks import DEFAULT_PROMPTS, complete_meta, load_benchmark
from groundinggpt.evaluation.mask_benchmarks import phrase_spans
from groundinggpt.evaluation.sample import tag_phrases
from groundinggpt.grounding.masks import decode_mask


def box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A ``(h, w)`` bool mask, True on rows ``y0:y1`` and columns ``x0:x1``."""
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE as it is stored in JSON (``counts`` a str)."""
    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"].decode("ascii")}


# ------------------------------------------------------------------------------------- RES

# image id -> (file name, width, height)
RES_IMAGES = {11: ("COCO_train2014_000000000011.jpg", 16, 12),
              12: ("COCO_train2014_000000000012.jpg", 20, 10)}  # fmt: skip
# A polygon object (the rectangle rows 3:8, columns 2:10) and an RLE object.
POLYGON = [[2, 3, 10, 3, 10, 8, 2, 8]]
RLE_MASK = box_mask(10, 20, 10, 2, 14, 6)
RES_REFS = [
    {"ref_id": 0, "ann_id": 101, "image_id": 11, "split": "val", "sent_ids": [0, 1],
     "sentences": [{"sent_id": 0, "sent": "left dog", "raw": "Left dog."},
                   {"sent_id": 1, "sent": "small dog.", "raw": "small dog."}]},
    {"ref_id": 1, "ann_id": 201, "image_id": 12, "split": "val", "sent_ids": [2],
     "sentences": [{"sent_id": 2, "sent": "the cup", "raw": "the cup"}]},
    {"ref_id": 2, "ann_id": 101, "image_id": 11, "split": "testA", "sent_ids": [3],
     "sentences": [{"sent_id": 3, "sent": "dog", "raw": "dog"}]},
]  # fmt: skip


def write_res(root: Path, anns: dict | None = None, images: bool = True) -> tuple[Path, Path]:
    """``refs(unc).p`` + ``instances.json`` with segmentations; ``(pickle, image folder)``."""
    ann_dir, img_dir = root / "refcoco", root / "train2014"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / "refs(unc).p").write_bytes(pickle.dumps(RES_REFS, protocol=2))
    anns = anns or {
        101: {"image_id": 11, "bbox": [2.0, 3.0, 8.0, 5.0], "segmentation": POLYGON},
        201: {"image_id": 12, "bbox": [10.0, 2.0, 4.0, 4.0], "segmentation": rle(RLE_MASK)},
    }
    instances = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h}
                   for i, (f, w, h) in RES_IMAGES.items()],
        "annotations": [{"id": a, "category_id": 1, "iscrowd": 0, **v} for a, v in anns.items()],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    (ann_dir / "instances.json").write_text(json.dumps(instances))
    if images:
        for f, w, h in RES_IMAGES.values():
            write_image(img_dir / f, w, h)
    return ann_dir / "refs(unc).p", img_dir


def test_res_one_sample_per_expression_with_the_objects_mask(tmp_path: Path) -> None:
    refs, images = write_res(tmp_path)
    samples = load_benchmark("refcoco_res", refs, images, split="val")
    assert [s.id for s in samples] == ["0_0", "0_1", "1_2"]
    first, cup = samples[0], samples[2]
    assert (
        first.task == "res" and first.question == "<image>\nPlease segment left dog in this image."
    )
    assert samples[1].question == "<image>\nPlease segment small dog in this image."
    assert first.media == {"image": str(images.absolute() / RES_IMAGES[11][0])}
    assert first.target == POLYGON and cup.target == rle(RLE_MASK)  # as in instances.json
    assert (first.meta["width"], first.meta["height"], first.meta["ann_id"]) == (16, 12, 101)
    assert first.meta["box"] == [2.0, 3.0, 10.0, 8.0] and cup.meta["box"] == [10.0, 2.0, 14.0, 6.0]
    np.testing.assert_array_equal(decode_mask(first.target, 12, 16), box_mask(12, 16, 2, 3, 10, 8))
    np.testing.assert_array_equal(decode_mask(cup.target, 10, 20), RLE_MASK)
    json.dumps([s.target for s in samples])  # targets stay JSON
    full = complete_meta(cup)
    assert (full.meta["width"], full.meta["height"]) == (20, 10)
    assert full.reference() == "It is [SEG]."
    assert full.to_record()["conversations"][1]["value"] == "It is [SEG]."
    test_a = load_benchmark("refcoco+_res", refs.parent, images, split="testA")  # the folder
    assert [s.id for s in test_a] == ["2_3"] and test_a[0].target == POLYGON


def test_res_malformed_objects_and_files_are_named(tmp_path: Path) -> None:
    refs, images = write_res(tmp_path)
    with pytest.raises(ValueError, match="testB.*available"):
        load_benchmark("refcocog_res", refs, images, split="testB")
    export = tmp_path / "refcoco_val.jsonl"
    export.write_text('{"image": "a.jpg", "sentence": "x", "bbox": [0, 0, 1, 1]}\n')
    with pytest.raises(ValueError, match="refs.*instances.json"):
        load_benchmark("refcoco_res", export, images)
    no_seg = {101: {"image_id": 11, "bbox": [2, 3, 8, 5]},
              201: {"image_id": 12, "bbox": [0, 0, 1, 1], "segmentation": [[1, 2, 3]]}}  # fmt: skip
    refs, images = write_res(tmp_path / "a", no_seg, images=False)
    with pytest.raises(ValueError, match=r"instances.json: annotation 101 \(ref 0\).*polygons"):
        load_benchmark("refcoco_res", refs, images, split="val")
    wrong_size = {101: {"image_id": 11, "bbox": [0, 0, 1, 1], "segmentation": rle(RLE_MASK)},
                  201: {"image_id": 12, "bbox": [0, 0, 1, 1], "segmentation": POLYGON}}  # fmt: skip
    refs, images = write_res(tmp_path / "b", wrong_size, images=False)
    with pytest.raises(ValueError, match=r"annotation 101.*RLE size \[10, 20\].*\[12, 16\]"):
        load_benchmark("refcoco_res", refs, images, split="val")


def test_res_media_names_stay_in_the_media_folder(tmp_path: Path) -> None:
    refs, images = write_res(tmp_path, images=False)
    instances = json.loads((refs.parent / "instances.json").read_text())
    instances["images"][0]["file_name"] = "../secret.jpg"
    (refs.parent / "instances.json").write_text(json.dumps(instances))
    with pytest.raises(ValueError, match=r"instances.json: image 11: media name '../secret.jpg'"):
        load_benchmark("refcoco_res", refs, images, split="val")


# ------------------------------------------------------------------------------------- GCG

GCG_H, GCG_W = 12, 16
MAN, HORSE = box_mask(12, 16, 0, 2, 5, 12), box_mask(12, 16, 6, 4, 16, 12)
SKY = box_mask(8, 10, 0, 0, 10, 3)


def write_gcg(root: Path, split: str = "val", labels: list[str] | None = None) -> Path:
    """``{split}_gcg_coco_{caption,mask}_gt.json`` in ``val_test/``, as GLaMM's evaluate.py reads."""
    folder = root / "annotations" / "val_test"
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"id": "sa_1", "file_name": "sa_1.jpg", "height": GCG_H, "width": GCG_W},
              {"id": "sa_2"}]  # fmt: skip
    # Phrases listed out of caption order; one mask per phrase, in the same order.
    captions = [
        {"id": 1, "image_id": "sa_1", "caption": "A man rides a horse on the beach.",
         "labels": labels or ["a horse", "A man"]},
        {"id": 2, "image_id": "sa_2", "caption": "The sky is blue.", "labels": ["The sky"]},
    ]  # fmt: skip
    masks = [{"id": k, "image_id": i, "category_id": 1, "segmentation": rle(m), "iscrowd": 0}
             for k, (i, m) in enumerate([("sa_1", HORSE), ("sa_1", MAN), ("sa_2", SKY)])]  # fmt: skip
    (folder / f"{split}_gcg_coco_caption_gt.json").write_text(
        json.dumps({"images": images, "annotations": captions})
    )
    (folder / f"{split}_gcg_coco_mask_gt.json").write_text(
        json.dumps({"images": images, "annotations": masks, "categories": [{"id": 1}]})
    )
    return folder


def test_gcg_one_sample_per_image_phrases_in_caption_order(tmp_path: Path) -> None:
    folder, media = write_gcg(tmp_path), tmp_path / "GranDf_HA_images" / "val_test"
    samples = load_benchmark("gcg", folder, media, split="val")
    assert [s.id for s in samples] == ["sa_1", "sa_2"]
    a, b = samples
    assert a.task == "gcg" and a.question == DEFAULT_PROMPTS["gcg"]
    assert a.question.startswith("<image>\nCould you please give me a detailed description")
    assert a.media == {"image": str(media.absolute() / "sa_1.jpg")}
    assert b.media == {"image": str(media.absolute() / "sa_2.jpg")}  # no file_name: {id}.jpg
    assert [t["phrase"] for t in a.target] == ["A man", "a horse"]  # caption order
    np.testing.assert_array_equal(decode_mask(a.target[0]["segmentation"], GCG_H, GCG_W), MAN)
    np.testing.assert_array_equal(decode_mask(a.target[1]["segmentation"], GCG_H, GCG_W), HORSE)
    assert (a.meta["width"], a.meta["height"]) == (GCG_W, GCG_H)
    assert (b.meta["width"], b.meta["height"]) == (10, 8)  # from the RLE size
    np.testing.assert_array_equal(decode_mask(b.target[0]["segmentation"], 8, 10), SKY)
    assert a.meta["caption"] == "A man rides a horse on the beach."
    assert a.meta["spans"] == [[0, 5], [12, 19]]
    assert a.reference() == "<p>A man</p> [SEG] rides <p>a horse</p> [SEG] on the beach."
    assert b.reference() == "<p>The sky</p> [SEG] is blue."
    json.dumps([s.target for s in samples])
    by_file = load_benchmark("gcg", folder / "val_gcg_coco_caption_gt.json", media)
    assert [s.target for s in by_file] == [s.target for s in samples]
    write_image(media / "sa_1.jpg", GCG_W, GCG_H)
    assert complete_meta(a).meta["width"] == GCG_W
    assert [s.id for s in load_benchmark("gcg", folder, media, split="val", limit=1)] == ["sa_1"]


def test_gcg_files_and_malformed_items_are_named(tmp_path: Path) -> None:
    folder = write_gcg(tmp_path)
    with pytest.raises(ValueError, match="GCG split must be one of"):
        load_benchmark("gcg", folder, tmp_path)
    with pytest.raises(FileNotFoundError, match="test_gcg_coco_caption_gt.json"):
        load_benchmark("gcg", folder, tmp_path, split="test")
    bad = write_gcg(tmp_path / "b", labels=["a horse", "A man", "the beach"])
    with pytest.raises(
        ValueError, match=r"caption_gt.json: image 'sa_1' has 3 grounded .* 2 masks"
    ):
        load_benchmark("gcg", bad, tmp_path, split="val")
    bad = write_gcg(tmp_path / "c", labels=["a horse", "a dog"])
    with pytest.raises(ValueError, match=r"image 'sa_1': grounded phrase 'a dog' is not in"):
        load_benchmark("gcg", bad, tmp_path, split="val")
    cap = folder / "val_gcg_coco_caption_gt.json"
    data = json.loads(cap.read_text())
    data["images"][0]["file_name"] = "../sa_1.jpg"
    cap.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"image 'sa_1': media name '../sa_1.jpg' leads outside"):
        load_benchmark("gcg", folder, tmp_path, split="val")
    del data["annotations"][0]["labels"]
    cap.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"caption_gt.json: image 'sa_1': 'labels' must be"):
        load_benchmark("gcg", folder, tmp_path, split="val")


def test_phrase_spans_and_tags() -> None:
    assert phrase_spans("a dog and a dog", ["a dog", "A dog"], "x") == [(0, 5), (10, 15)]
    assert phrase_spans("the man and his dog", ["his dog", "man"], "x") == [(12, 19), (4, 7)]
    assert tag_phrases("the man and his dog", [[4, 7], [12, 19]]) == (
        "the <p>man</p> [SEG] and <p>his dog</p> [SEG]"
    )


# -------------------------------------------------------------------------------- AVSBench

AVS_W, AVS_H = 8, 6
AVS_MASKS = {1: box_mask(AVS_H, AVS_W, 1, 1, 4, 5), 2: box_mask(AVS_H, AVS_W, 3, 0, 8, 2)}


def write_mask_png(path: Path, mask: np.ndarray, mode: str = "L") -> None:
    """A ground-truth mask PNG: 255 on the object (S4, mode L) or palette index 1 (MS3, P)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(mask.astype(np.uint8) * (255 if mode == "L" else 1), mode="L")
    if mode == "P":
        img = img.convert("P")
    img.save(path)


def write_s4(root: Path) -> tuple[Path, Path, Path]:
    """S4: csv + frames 1-2, masks 1-2 and the wav of the test video; (csv, frames, audio)."""
    src = root / "Single-source"
    data = src / "s4_data"
    src.mkdir(parents=True, exist_ok=True)
    (src / "s4_meta_data.csv").write_text(
        "name,start,category,split\n"
        "-0ZaRjmdKfY_0,0,dog_barking,train\n"
        "zzQ7zMAFKlQ_3,3,playing_violin,test\n"
    )
    vid, cat = "zzQ7zMAFKlQ_3", "playing_violin"
    for k, m in AVS_MASKS.items():
        write_image(data / "visual_frames" / "test" / cat / vid / f"{vid}_{k}.png", AVS_W, AVS_H)
        write_mask_png(data / "gt_masks" / "test" / cat / vid / f"{vid}_{k}.png", m)
    write_audio(data / "audio_wav" / "test" / cat / f"{vid}.wav")
    return src / "s4_meta_data.csv", data / "visual_frames", data / "audio_wav"


def png_mask(path: str) -> np.ndarray:
    return np.asarray(Image.open(path)) != 0  # nonzero = the sounding object


def test_avsbench_s4_one_sample_per_annotated_frame(tmp_path: Path) -> None:
    csv_path, frames, audio = write_s4(tmp_path)
    samples = load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="test")
    vid, cat = "zzQ7zMAFKlQ_3", "playing_violin"
    assert [s.id for s in samples] == [f"{vid}_{k}" for k in range(1, 6)]  # all 5 frames
    first = samples[0]
    assert first.task == "avs" and first.question == (
        "<image>\n<sound>\nPlease segment the object that makes this sound."
    )
    assert first.media == {
        "image": str(frames.absolute() / "test" / cat / vid / f"{vid}_1.png"),
        "sound": str(audio.absolute() / "test" / cat / f"{vid}.wav"),
    }
    gt = frames.absolute().parent / "gt_masks" / "test" / cat / vid
    assert [s.target for s in samples] == [str(gt / f"{vid}_{k}.png") for k in range(1, 6)]
    assert first.meta["width"] is None and first.meta["category"] == cat
    assert (first.meta["subset"], first.meta["frame"]) == ("s4", 1)
    full = complete_meta(samples[1])
    assert (full.meta["width"], full.meta["height"]) == (AVS_W, AVS_H)
    np.testing.assert_array_equal(png_mask(full.target), AVS_MASKS[2])
    assert full.reference() == "It is [SEG]."
    with pytest.raises(MediaError):  # frame 3 was not written: a miss at evaluation time
        complete_meta(samples[2])
    train = load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="train")
    assert [s.id for s in train] == ["-0ZaRjmdKfY_0_1"]  # S4 train: the first frame only
    two = load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="test", limit=2)
    assert [s.id for s in two] == [f"{vid}_1", f"{vid}_2"]


def test_avsbench_ms3_layout_and_subset(tmp_path: Path) -> None:
    src = tmp_path / "Multi-sources"
    data = src / "ms3_data"
    src.mkdir(parents=True)
    (src / "ms3_meta_data.csv").write_text("name,split\n_aUceEHGEB4_1,train\nYzKs0ZlNwVQ_0,test\n")
    vid = "YzKs0ZlNwVQ_0"
    write_image(data / "visual_frames" / vid / f"{vid}.mp4_1.png", AVS_W, AVS_H)
    write_mask_png(data / "gt_masks" / "test" / vid / f"{vid}_1.png", AVS_MASKS[1], mode="P")
    write_audio(data / "audio_wav" / "test" / f"{vid}.wav")
    args = (src / "ms3_meta_data.csv", data / "visual_frames")
    samples = load_benchmark("avsbench", *args, audio_dir=data / "audio_wav", split="test")
    assert [s.id for s in samples] == [f"{vid}_{k}" for k in range(1, 6)]
    s = samples[0]
    assert s.media["image"].endswith(f"visual_frames/{vid}/{vid}.mp4_1.png")  # no split folder
    assert s.media["sound"].endswith(f"audio_wav/test/{vid}.wav")
    assert s.target.endswith(f"gt_masks/test/{vid}/{vid}_1.png")
    assert s.meta["subset"] == "ms3" and s.meta["category"] is None
    np.testing.assert_array_equal(png_mask(complete_meta(s).target), AVS_MASKS[1])
    train = load_benchmark("avsbench", *args, audio_dir=data, split="train", subset="ms3")
    assert len(train) == 5  # MS3 annotates all 5 frames in every split


def test_avsbench_errors_name_the_file_and_line(tmp_path: Path) -> None:
    csv_path, frames, audio = write_s4(tmp_path)
    with pytest.raises(ValueError, match="audio_dir"):
        load_benchmark("avsbench", csv_path, frames, split="test")
    with pytest.raises(ValueError, match=r"no split 'valid'.*\['test', 'train'\]"):
        load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="valid")
    with pytest.raises(ValueError, match="subset must be one of"):
        load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="test", subset="avss")
    other = tmp_path / "meta.csv"
    other.write_text("name,split\nabc,test\n")
    with pytest.raises(ValueError, match="lacks the columns"):  # an MS3 csv read as S4
        load_benchmark("avsbench", other, frames, audio_dir=audio, split="test", subset="s4")
    with pytest.raises(ValueError, match="set subset"):
        load_benchmark("avsbench", other, frames, audio_dir=audio, split="test")
    csv_path.write_text("name,start,category,split\n../../etc,0,dog_barking,test\n")
    with pytest.raises(ValueError, match=r"s4_meta_data.csv:2: media name .*leads outside"):
        load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="test")
    csv_path.write_text("name,start,category,split\nabc,0,dog_barking\n")
    with pytest.raises(ValueError, match=r"s4_meta_data.csv:2: expected 4 columns"):
        load_benchmark("avsbench", csv_path, frames, audio_dir=audio, split="test")
    with pytest.raises(ValueError, match="lacks the placeholders"):
        load_benchmark("avsbench", other, frames, audio_dir=audio, split="test", subset="ms3",
                       prompt="<image>\nSegment the sounding object.")  # fmt: skip
