"""Pixel-grounding benchmark readers: referring segmentation, GCG and audio-visual segmentation.

Like the box readers (`groundinggpt.evaluation.benchmarks`), one `BenchmarkSample` per scored
thing, with the target in the benchmark's own form: the annotation's segmentation objects
(COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` or RLE ``{"size": [h, w], "counts": ...}``,
kept as read, JSON-serialisable) or, for AVSBench, the path of the ground-truth mask PNG.
Nothing is decoded here: masks are decoded at scoring time
(`groundinggpt.grounding.masks.decode_mask`; AVSBench PNGs: nonzero = foreground), so
reading stays cheap and a missing media file is a miss at evaluation time, not a crash.

Readers per benchmark (``name`` of `load_benchmark`):

- ``refcoco_res``, ``refcoco+_res``, ``refcocog_res`` (task ``res``): the refer toolkit's
  ``refs(unc).p`` / ``refs(umd).p`` with ``instances.json`` beside it (as the box readers,
  `groundinggpt.evaluation.refer.refer_objects`); one sample per referring expression, the
  target the object's ``segmentation`` from ``instances.json``.
- ``gcg`` (task ``gcg``): GLaMM's GranD-f GCG evaluation files, the pair that GLaMM's
  ``eval/gcg/evaluate.py`` reads as ground truth, ``{split}_gcg_coco_caption_gt.json``
  (COCO captions: ``images`` with ``id``; ``annotations`` with ``image_id``, ``caption`` and
  ``labels``, the grounded phrases) and ``{split}_gcg_coco_mask_gt.json`` (COCO instances:
  ``annotations`` with ``image_id`` and an RLE ``segmentation``, one per label, in label
  order). One sample per caption image; image ``{media_dir}/{id}.jpg`` (or the entry's
  ``file_name``).
- ``avsbench`` (task ``avs``): AVSBench-object S4 (``Single-source/s4_meta_data.csv``) and
  MS3 (``Multi-sources/ms3_meta_data.csv``) as the official AVSBench loaders read them;
  one sample per (video, frame) with a ground-truth mask (S4 train: the first frame only;
  S4 val/test and every MS3 split: all 5).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from groundinggpt.evaluation.annotations import (
    existing_file,
    fill_prompt,
    media_file,
    query_text,
    read_utf8,
    single_file,
)
from groundinggpt.evaluation.refer import refer_objects, xywh_to_xyxy
from groundinggpt.evaluation.sample import BenchmarkSample

# Default prompts of the mask tasks ("{query}": the expression; unused by gcg and avs).
# RES is GLaMM's SEG_QUESTIONS[1] and GCG its evaluation instruction (groundingLMM
# dataset/utils/utils.py, eval/gcg/infer.py), both after the house's "<image>\n" (GLaMM itself
# puts "The <image> provides an overview of the picture.\n" first: override `prompt` for a
# GLaMM checkpoint). The AVS one follows the sound-localisation prompt's phrasing.
MASK_PROMPTS = {
    "res": "<image>\nPlease segment {query} in this image.",
    "gcg": "<image>\nCould you please give me a detailed description of the image? Please "
    "respond with interleaved segmentation masks for the corresponding parts of the answer.",
    "avs": "<image>\n<sound>\nPlease segment the object that makes this sound.",
}

# ----------------------------------------------------------------------------- segmentation


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_rle(seg: dict, size: tuple[Any, Any], where: str) -> None:
    hw = seg.get("size")
    if not (isinstance(hw, list) and len(hw) == 2 and all(isinstance(v, int) for v in hw)):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {hw!r}")
    counts = seg.get("counts")
    runs = isinstance(counts, list) and all(isinstance(c, int) for c in counts)
    if not (isinstance(counts, str) or runs):
        raise ValueError(f"{where}: RLE 'counts' must be a string or a list of ints")
    w, h = size
    if w is not None and h is not None and [int(h), int(w)] != hw:
        raise ValueError(f"{where}: RLE size {hw} is not the image's [height, width] [{h}, {w}]")


def check_segmentation(seg: Any, where: str, size: tuple[Any, Any] = (None, None)) -> Any:
    """``seg`` if it is a COCO segmentation; else `ValueError` naming ``where``.

    Accepted: polygons (a non-empty list of flat ``[x0, y0, x1, y1, ...]`` lists, at least
    three points of finite numbers each, as `groundinggpt.grounding.masks.decode_mask`) or an
    RLE dict ``{"size": [h, w], "counts": str | list[int]}``; with ``size = (width, height)``
    known, an RLE's ``size`` must match it.

    Example:
        >>> check_segmentation([[2, 3, 10, 3, 10, 8, 2, 8]], "instances.json: annotation 7")
        [[2, 3, 10, 3, 10, 8, 2, 8]]
    """
    if isinstance(seg, dict):
        _check_rle(seg, size, where)
        return seg
    ok = isinstance(seg, list) and seg and all(isinstance(p, list) and p for p in seg)
    if not ok or not all(len(p) >= 6 and len(p) % 2 == 0 and all(map(_is_number, p)) for p in seg):
        raise ValueError(
            f"{where}: segmentation must be COCO polygons [[x0, y0, x1, y1, ...], ...] or an "
            f"RLE {{'size': [h, w], 'counts': ...}}, got {str(seg)[:80]}"
        )
    return seg


# ----------------------------------------------------------------------------------- RES


def _res_samples(ref: dict, image: dict, ann: dict, where: Path, media_dir: Path, prompt: str):
    ann_where = f"{where}: annotation {ann.get('id')} (ref {ref['ref_id']})"
    size = (image.get("width"), image.get("height"))
    seg = check_segmentation(ann.get("segmentation"), ann_where, size)
    box = xywh_to_xyxy(ann.get("bbox"), ann_where)
    path = media_file(media_dir, str(image.get("file_name")), f"{where}: image {image['id']}")
    for sent in ref["sentences"]:
        text = sent.get("sent") or sent.get("raw") or ""
        yield BenchmarkSample(
            id=f"{ref['ref_id']}_{sent['sent_id']}",
            task="res",
            media={"image": path},
            question=fill_prompt(prompt, query_text(text), "res"),
            target=seg,
            meta={"width": size[0], "height": size[1], "ann_id": ref["ann_id"], "box": box,
                  "ref_id": ref["ref_id"], "sent_id": sent["sent_id"],
                  "image_id": ref["image_id"], "sentence": text},
        )  # fmt: skip


def read_res(
    annotation_file: Any,
    media_dir: Path,
    prompt: str,
    split: str | None = None,
    name: str = "refcoco_res",
    **_: Any,
) -> list[BenchmarkSample]:
    """RefCOCO/+/g segmentation: one sample per expression, target the object's segmentation.

    Args:
        annotation_file: ``refs(*).p`` (``instances.json`` beside it) or its folder.
        media_dir: folder of the COCO images (``train2014``).
        prompt: template with ``{query}`` and ``<image>``.
        split: ``val``/``testA``/``testB`` (UNC), ``val``/``test`` (UMD); required.
        name: the benchmark name, for messages.

    Example:
        >>> samples = read_res("data/refcoco/refs(unc).p", Path("data/coco/train2014"),
        ...                    "<image>\\nPlease segment {query} in this image.", "testA")
        ...  # doctest: +SKIP
        >>> samples[0].target[0][:4], samples[0].meta["box"]  # doctest: +SKIP
        ([103.93, 299.99, 104.5, 300.9], [103.93, 299.99, 238.15, 477.41])
    """
    path = single_file(annotation_file, name)
    if not (path.is_dir() or path.suffix in (".p", ".pkl", ".pickle")):
        raise ValueError(
            f"{path}: {name} reads the refer toolkit's refs(*).p with instances.json beside it "
            "(JSON exports carry no segmentation)"
        )
    instances, objects = refer_objects(path, split)
    samples = []
    for ref, image, ann in objects:
        samples += _res_samples(ref, image, ann, instances, media_dir, prompt)
    return samples


# ----------------------------------------------------------------------------------- GCG

GCG_FILES = ("{split}_gcg_coco_caption_gt.json", "{split}_gcg_coco_mask_gt.json")
GCG_SPLITS = ("val", "test")


def _gcg_files(annotation_file: Any, split: str | None) -> tuple[Path, Path]:
    """``(caption gt, mask gt)`` from the ``val_test`` folder + split, or either file."""
    path = single_file(annotation_file, "gcg")
    if path.is_dir():
        if split not in GCG_SPLITS:
            raise ValueError(f"{path}: GCG split must be one of {GCG_SPLITS}, got {split!r}")
        cap, mask = (path / f.format(split=split) for f in GCG_FILES)
    elif "_caption_gt" in path.name:
        cap, mask = path, path.with_name(path.name.replace("_caption_gt", "_mask_gt"))
    elif "_mask_gt" in path.name:
        cap, mask = path.with_name(path.name.replace("_mask_gt", "_caption_gt")), path
    else:
        raise ValueError(
            f"{path}: expected the GranD-f val_test folder or a *_gcg_coco_caption_gt.json / "
            "*_gcg_coco_mask_gt.json file"
        )
    return existing_file(cap, "GCG caption truth"), existing_file(mask, "GCG mask truth")


def _coco_file(path: Path) -> tuple[list[dict], dict[Any, list[dict]]]:
    """``(images, image id -> annotations in file order)`` of a COCO-style JSON file."""
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    ok = isinstance(data, dict) and isinstance(data.get("images"), list)
    if not ok or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: expected a COCO-style JSON with 'images' and 'annotations'")
    by_image: dict[Any, list[dict]] = {}
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ValueError(f"{path}: annotation {n} has no image_id: {str(ann)[:80]}")
        by_image.setdefault(ann["image_id"], []).append(ann)
    for n, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise ValueError(f"{path}: images entry {n} has no id: {str(img)[:80]}")
    return data["images"], by_image


def phrase_spans(caption: str, phrases: list[str], where: str) -> list[tuple[int, int]]:
    """Character span of each phrase in ``caption`` (case-insensitive, spans never overlap).

    Each phrase takes its first occurrence after the previous phrase's span, else its first
    free occurrence anywhere; a phrase that is not in the caption is a `ValueError`.

    Example:
        >>> phrase_spans("A man rides a horse.", ["a man", "a horse"], "img 1")
        [(0, 5), (12, 19)]
    """
    low, taken, spans, cursor = caption.lower(), [], [], 0
    for phrase in phrases:
        key, found = phrase.strip().lower(), None
        for start in (cursor, 0):
            at = low.find(key, start) if key else -1
            while at >= 0 and any(at < e and s < at + len(key) for s, e in taken):
                at = low.find(key, at + 1)
            if at >= 0:
                found = (at, at + len(key))
                break
        if found is None:
            raise ValueError(
                f"{where}: grounded phrase {phrase!r} is not in the caption {caption!r}"
            )
        taken.append(found)
        spans.append(found)
        cursor = found[1]
    return spans


def _gcg_caption(anns: list[dict], where: str) -> tuple[str, list[str]]:
    ann = next((a for a in anns if "caption" in a), None)
    if ann is None:
        raise ValueError(f"{where}: no caption annotation")
    caption, labels = ann["caption"], ann.get("labels")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"{where}: caption must be a non-empty string, got {caption!r}")
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise ValueError(f"{where}: 'labels' must be the list of grounded phrases, got {labels!r}")
    return caption.strip(), labels


def _gcg_size(image: dict, masks: list[dict]) -> tuple[Any, Any]:
    """``(width, height)`` from the images entry, else from the first RLE's size."""
    if image.get("width") is not None and image.get("height") is not None:
        return int(image["width"]), int(image["height"])
    rle = next((m["segmentation"] for m in masks if isinstance(m.get("segmentation"), dict)), None)
    if rle is not None and isinstance(rle.get("size"), list) and len(rle["size"]) == 2:
        return int(rle["size"][1]), int(rle["size"][0])
    return None, None


def _gcg_sample(image: dict, caps: list[dict], masks: list[dict], files: tuple[Path, Path],
                media_dir: Path, prompt: str) -> BenchmarkSample:  # fmt: skip
    image_id = image["id"]
    where = f"{files[0]}: image {image_id!r}"
    caption, labels = _gcg_caption(caps, where)
    if len(labels) != len(masks):
        raise ValueError(
            f"{where} has {len(labels)} grounded phrases but {files[1]} has {len(masks)} masks "
            "for it (one mask per phrase, in phrase order)"
        )
    size = _gcg_size(image, masks)
    segs = [check_segmentation(m.get("segmentation"), f"{files[1]}: image {image_id!r} "
                               f"mask {k}", size) for k, m in enumerate(masks)]  # fmt: skip
    spans = phrase_spans(caption, labels, where)
    order = sorted(range(len(labels)), key=lambda k: spans[k])
    name = str(image.get("file_name") or f"{image_id}.jpg")
    return BenchmarkSample(
        id=str(image_id),
        task="gcg",
        media={"image": media_file(media_dir, name, where)},
        question=fill_prompt(prompt, "", "gcg"),
        target=[{"phrase": labels[k], "segmentation": segs[k]} for k in order],
        meta={
            "width": size[0],
            "height": size[1],
            "image_id": image_id,
            "caption": caption,
            "spans": [list(spans[k]) for k in order],
        },
    )


def read_gcg(
    annotation_file: Any, media_dir: Path, prompt: str, split: str | None = None, **_: Any
) -> list[BenchmarkSample]:
    """GranD-f GCG evaluation: one sample per image of the caption ground truth.

    The target lists ``{"phrase", "segmentation"}`` in caption order; ``meta`` carries the
    reference ``caption`` and each phrase's character ``spans`` in it.

    Args:
        annotation_file: the ``annotations/val_test`` folder (``split`` picks the pair), or
            one of the pair's files (the other must lie beside it).
        media_dir: ``GranDf_HA_images/val_test``.
        prompt: template with ``<image>`` (``{query}`` is empty).
        split: ``val`` or ``test`` (needed with the folder).

    Example:
        >>> samples = read_gcg("data/GranDf/annotations/val_test",
        ...                    Path("data/GranDf_HA_images/val_test"), MASK_PROMPTS["gcg"], "val")
        ...  # doctest: +SKIP
        >>> samples[0].target[0]["phrase"]  # doctest: +SKIP
        'A man'
    """
    files = _gcg_files(annotation_file, split)
    images, captions = _coco_file(files[0])
    _, masks = _coco_file(files[1])
    return [
        _gcg_sample(img, captions.get(img["id"], []), masks.get(img["id"], []), files,
                    media_dir, prompt)
        for img in images
    ]  # fmt: skip


# ------------------------------------------------------------------------------- AVSBench

AVS_SUBSETS = ("s4", "ms3")
AVS_FRAMES = 5  # frames per 5 s clip, 1-based file names


def _avs_subset(path: Path, subset: str | None) -> str:
    if subset is None:
        subset = next((s for s in AVS_SUBSETS if path.name.lower().startswith(f"{s}_")), None)
        if subset is None:
            raise ValueError(
                f"{path}: set subset (one of {AVS_SUBSETS}); the file name does not say"
            )
    if subset not in AVS_SUBSETS:
        raise ValueError(f"AVSBench subset must be one of {AVS_SUBSETS}, got {subset!r}")
    return subset


def _avs_rows(path: Path, subset: str) -> list[tuple[int, str, str, str]]:
    """``(line, video id, split, category)`` per csv row; the id is the first column."""
    lines = list(csv.reader(read_utf8(path).splitlines()))
    header = [h.strip() for h in lines[0]] if lines else []
    need = ["split", "category"] if subset == "s4" else ["split"]
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{path}: csv header {header} lacks the columns {missing}")
    cols = [header.index(c) for c in need]
    rows = []
    for n, row in enumerate(lines[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(header) or not row[0].strip():
            raise ValueError(f"{path}:{n}: expected {len(header)} columns {header}, got {row}")
        vals = [row[c].strip() for c in cols]
        rows.append((n, row[0].strip(), vals[0], vals[1] if subset == "s4" else ""))
    return rows


def _avs_paths(subset: str, split: str, cat: str, vid: str, k: int) -> tuple[str, str, str]:
    """(frame, audio, mask) paths relative to visual_frames/, audio_wav/, gt_masks/."""
    if subset == "s4":
        return (f"{split}/{cat}/{vid}/{vid}_{k}.png", f"{split}/{cat}/{vid}.wav",
                f"{split}/{cat}/{vid}/{vid}_{k}.png")  # fmt: skip
    return f"{vid}/{vid}.mp4_{k}.png", f"{split}/{vid}.wav", f"{split}/{vid}/{vid}_{k}.png"


def _avs_samples(row: tuple[int, str, str, str], where: Path, dirs: tuple[Path, Path, Path],
                 subset: str, prompt: str) -> list[BenchmarkSample]:  # fmt: skip
    n, vid, split, cat = row
    frames = 1 if (subset, split) == ("s4", "train") else AVS_FRAMES
    samples = []
    for k in range(1, frames + 1):
        image, sound, mask = (
            media_file(d, rel, f"{where}:{n}")
            for d, rel in zip(dirs, _avs_paths(subset, split, cat, vid, k), strict=True)
        )
        samples.append(BenchmarkSample(
            id=f"{vid}_{k}", task="avs", media={"image": image, "sound": sound},
            question=fill_prompt(prompt, cat.replace("_", " "), "avs"), target=mask,
            meta={"width": None, "height": None, "video_id": vid, "frame": k,
                  "subset": subset, "split": split, "category": cat or None},
        ))  # fmt: skip
    return samples


def read_avsbench(
    annotation_file: Any,
    media_dir: Path,
    prompt: str,
    audio_dir: Path | None = None,
    split: str | None = None,
    subset: str | None = None,
    **_: Any,
) -> list[BenchmarkSample]:
    """AVSBench-object S4 / MS3: one sample per (video, frame) with a ground-truth mask.

    Layout, as the official AVSBench loaders read it (``{k}`` = 1..5):

    - S4: csv ``name, start, category, split``; frame
      ``{media_dir}/{split}/{category}/{name}/{name}_{k}.png``, audio
      ``{audio_dir}/{split}/{category}/{name}.wav``, mask
      ``{media_dir}/../gt_masks/{split}/{category}/{name}/{name}_{k}.png``.
    - MS3: csv ``name, split``; frame ``{media_dir}/{name}/{name}.mp4_{k}.png`` (no split
      folder), audio ``{audio_dir}/{split}/{name}.wav``, mask
      ``{media_dir}/../gt_masks/{split}/{name}/{name}_{k}.png``.

    The target is the mask PNG's path (nonzero = sounding object); image sizes are read later
    by `complete_meta`.

    Args:
        annotation_file: ``s4_meta_data.csv`` or ``ms3_meta_data.csv``.
        media_dir: the ``visual_frames`` folder (``gt_masks`` is its sibling).
        prompt: template with ``<image>`` and ``<sound>``; ``{query}``: the S4 category.
        audio_dir: the ``audio_wav`` folder.
        split: ``train``, ``val`` or ``test``.
        subset: ``s4`` or ``ms3``; ``None``: from the csv's name.

    Example:
        >>> samples = read_avsbench("data/avsbench/Single-source/s4_meta_data.csv",
        ...     Path("data/avsbench/Single-source/s4_data/visual_frames"), MASK_PROMPTS["avs"],
        ...     Path("data/avsbench/Single-source/s4_data/audio_wav"), "test")  # doctest: +SKIP
        >>> samples[0].id, samples[0].target  # doctest: +SKIP
        ('-0ZaRjmdKfY_0_1', '.../gt_masks/test/dog_barking/-0ZaRjmdKfY_0/-0ZaRjmdKfY_0_1.png')
    """
    if audio_dir is None:
        raise ValueError("avsbench needs audio_dir (the audio_wav folder)")
    path = single_file(annotation_file, "avsbench")
    subset = _avs_subset(path, subset)
    rows = _avs_rows(path, subset)
    available = {r[2] for r in rows}
    if split not in available:
        raise ValueError(f"{path}: no split {split!r}; available: {sorted(available)}")
    dirs = (media_dir, audio_dir, media_dir.parent / "gt_masks")
    samples = []
    for row in (r for r in rows if r[2] == split):
        samples += _avs_samples(row, path, dirs, subset, prompt)
    return samples
