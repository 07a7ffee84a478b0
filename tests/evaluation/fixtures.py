"""Tiny benchmark fixtures in each official format, written by the tests themselves.

Every writer takes a folder and returns what a test needs to check against (paths, the
ground truth it wrote). Media are small: a few PNG/JPEG pixels, 1-2 s mp4 at 8 fps, 1 s wav.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from groundinggpt.data.synthetic.writers import write_mp4, write_wav


def write_image(path: Path, width: int, height: int, value: int = 90) -> Path:
    """A flat image (PNG or JPEG by suffix) of ``width x height``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (value, 2 * value % 256, 40)).save(path)
    return path


def write_video(path: Path, num_frames: int, fps: int = 8, size: int = 32) -> Path:
    """A tiny mp4 (mpeg4, PyAV) of ``num_frames`` frames: duration ``num_frames / fps``.

    32 px, not 16 or 48: decord fails to decode frames of some widths (16 and 48 among them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(num_frames, dtype=np.uint8)[:, None, None] * 20
    write_mp4(path, frames, fps)
    return path


def write_audio(path: Path, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    write_wav(path, 0.3 * np.sin(2 * np.pi * 440 * t), sample_rate)
    return path


# ------------------------------------------------------------------------------------ refer

# image id -> (file name, width, height); annotation id -> (image id, [x, y, w, h])
REFER_IMAGES = {
    11: ("COCO_train2014_000000000011.jpg", 64, 40),
    12: ("COCO_train2014_000000000012.jpg", 30, 50),
}
REFER_ANNS = {101: (11, [4.0, 6.0, 20.0, 10.0]), 102: (11, [30.0, 0.0, 34.0, 40.0]),
              201: (12, [0.0, 10.0, 15.0, 25.0])}  # fmt: skip
# Two refs on the same image (val), one with two sentences; one ref in testA.
REFER_REFS = [
    {"ref_id": 0, "ann_id": 101, "image_id": 11, "split": "val", "category_id": 1,
     "file_name": "COCO_train2014_000000000011_101.jpg", "sent_ids": [0, 1],
     "sentences": [{"sent_id": 0, "sent": "left dog", "raw": "Left dog.", "tokens": ["left"]},
                   {"sent_id": 1, "sent": "small dog", "raw": "small dog", "tokens": []}]},
    {"ref_id": 1, "ann_id": 102, "image_id": 11, "split": "val", "category_id": 1,
     "file_name": "COCO_train2014_000000000011_102.jpg", "sent_ids": [2],
     "sentences": [{"sent_id": 2, "sent": "right dog", "raw": "right dog", "tokens": []}]},
    {"ref_id": 2, "ann_id": 201, "image_id": 12, "split": "testA", "category_id": 2,
     "file_name": "COCO_train2014_000000000012_201.jpg", "sent_ids": [3],
     "sentences": [{"sent_id": 3, "sent": "man", "raw": "man", "tokens": ["man"]}]},
]  # fmt: skip


def write_refer(root: Path, with_images: bool = True) -> tuple[Path, Path]:
    """``refs(unc).p`` (protocol 2, plain dicts/lists) + ``instances.json``; ``(pickle, images)``."""
    ann_dir, img_dir = root / "refcoco", root / "train2014"
    ann_dir.mkdir(parents=True, exist_ok=True)
    refs_path = ann_dir / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps(REFER_REFS, protocol=2))
    instances = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h}
                   for i, (f, w, h) in REFER_IMAGES.items()],
        "annotations": [{"id": a, "image_id": i, "bbox": b, "category_id": 1, "iscrowd": 0}
                        for a, (i, b) in REFER_ANNS.items()],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
    }  # fmt: skip
    (ann_dir / "instances.json").write_text(json.dumps(instances))
    if with_images:
        for f, w, h in REFER_IMAGES.values():
            write_image(img_dir / f, w, h)
    return refs_path, img_dir


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------- charades

# video id -> frames at 8 fps (durations 1.5 s and 2.0 s)
CHARADES_VIDEOS = {"AO8RW": 12, "Y6R7T": 16}
CHARADES_LINES = [
    "AO8RW 0.0 0.9##a person is putting a book on a shelf.",
    "AO8RW 0.5 1.5##person opens the door",
    "",
    "Y6R7T 1.2 0.4##a person sits down.",  # reversed: swapped with a warning
]


def write_charades(root: Path, with_videos: bool = True) -> tuple[Path, Path]:
    """``charades_sta_test.txt`` and ``{VIDEOID}.mp4``; returns ``(txt, video folder)``."""
    txt, videos = root / "charades_sta_test.txt", root / "videos"
    root.mkdir(parents=True, exist_ok=True)
    txt.write_text("\n".join(CHARADES_LINES) + "\n")
    if with_videos:
        for vid, n in CHARADES_VIDEOS.items():
            write_video(videos / f"{vid}.mp4", n)
    return txt, videos


# ------------------------------------------------------------------------------------- pope


def write_pope(root: Path) -> tuple[Path, Path]:
    """``coco_pope_{random,popular,adversarial}.json`` (JSONL) + images; ``(folder, images)``."""
    folder, images = root / "pope", root / "val2014"
    for k, cat in enumerate(("random", "popular", "adversarial")):
        rows = [
            {"question_id": q, "image": f"img_{q % 2}.jpg", "text": f"Is there a {cat} thing {q}?",
             "label": "yes" if q % 2 == 0 else "no"}
            for q in range(1, 5 + k)
        ]  # fmt: skip
        write_jsonl(folder / f"coco_pope_{cat}.json", rows)
    for i in range(2):
        write_image(images / f"img_{i}.jpg", 20 + i, 10)
    return folder, images


# ------------------------------------------------------------------------------------ vggss

VGGSS_ENTRIES = [
    {"file": "clip_a", "class": "dog barking", "bbox": [[0.1, 0.2, 0.5, 0.6]]},
    {"file": "clip_b", "class": "playing violin",
     "bbox": [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.02, 0.75]]},  # 1.02: clipped like VGGSS
]  # fmt: skip
VGGSS_SIZES = {"clip_a": (80, 40), "clip_b": (40, 60)}


def write_vggss(root: Path) -> tuple[Path, Path, Path]:
    """``vggss.json`` + ``frames/{file}.jpg`` + ``audio/{file}.wav``; ``(json, frames, audio)``."""
    root.mkdir(parents=True, exist_ok=True)
    ann = root / "vggss.json"
    ann.write_text(json.dumps(VGGSS_ENTRIES))
    for file_id, (w, h) in VGGSS_SIZES.items():
        write_image(root / "frames" / f"{file_id}.jpg", w, h)
        write_audio(root / "audio" / f"{file_id}.wav")
    return ann, root / "frames", root / "audio"


# -------------------------------------------------------------------------------- synthetic


def write_synthetic(root: Path) -> list[Path]:
    """Released-format test records of the four tasks (as data/synthetic writes them)."""
    write_image(root / "images" / "r0.png", 100, 50)
    write_image(root / "images" / "s0.png", 50, 100)
    write_audio(root / "audio" / "s0.wav")
    write_video(root / "videos" / "v0.mp4", 16)  # 2.0 s
    conv = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
    files = {
        "rec_test.json": [{"id": "rec_0", "task": "rec", "image": "images/r0.png",
                           "conversations": conv("<image>\nWhere is the red square? Answer with "
                                                 "a bounding box.", "[0.100, 0.250, 0.500, 0.750]"),
                           "meta": {"size": [100, 50]}}],
        "vtg_test.json": [{"id": "vtg_0", "task": "vtg", "video": "videos/v0.mp4",
                           "conversations": conv("<video>\nWhen does the blue circle appear?",
                                                 "{0.25, 0.50}"),
                           "meta": {"num_frames": 16, "fps": 8}}],
        "sl_test.json": [{"id": "sl_0", "image": "images/s0.png", "sound": "audio/s0.wav",
                          "conversations": conv("<image>\n<sound>\nWhich object is making this "
                                                "sound? Answer with a bounding box.",
                                                "[0.250, 0.000, 0.750, 0.500]")}],
        "pope_test.json": [{"id": "pope_0", "task": "pope", "image": "images/r0.png",
                            "conversations": conv("<image>\nIs there a red square in the image?",
                                                  "No."), "meta": {}}],
    }  # fmt: skip
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for name, records in files.items():
        (ann / name).write_text(json.dumps(records))
    return [ann / name for name in files]
