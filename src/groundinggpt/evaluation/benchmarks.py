"""Benchmark readers: official annotation files -> one `BenchmarkSample` per scored item.

Every reader keeps one sample per thing that is scored (a referring *expression*, a Charades
line, a POPE question, a VGGSS clip), with its target in the benchmark's own units: pixel
boxes of the original image (``rec``, ``sl``), seconds (``vtg``), "yes"/"no" (``pope``).
Readers are cheap: image sizes and video durations that the annotation does not carry are
left ``None`` and filled later by `complete_meta` (inside data-loader workers), so a missing
media file becomes a skipped sample (a miss) at evaluation time instead of a crash here.

Readers per benchmark (``name`` of `load_benchmark`):

- ``refcoco``, ``refcoco+``, ``refcocog``: the refer toolkit's ``refs(unc).p`` /
  ``refs(umd).p`` pickle with ``instances.json`` beside it, or a JSON/JSONL export
  (see `groundinggpt.evaluation.refer`).
- ``charades_sta``: ``charades_sta_test.txt`` lines ``VIDEOID start end##sentence`` (seconds),
  videos at ``{media_dir}/{VIDEOID}.mp4``.
- ``pope``: the official question files (JSONL ``question_id, image, text, label``), one file,
  a list, or a folder of ``*pope_{random,popular,adversarial}.json``; ``split`` picks a category.
- ``vggss``: ``vggss.json``, a list of ``{"file", "class", "bbox": [[x0, y0, x1, y1], ...]}``
  with boxes normalised to [0, 1] of the frame (the VGGSS evaluation code clips them to
  [0, 1] and scales them to its 224 x 224 resized frame; a per-axis scaling, so multiplying
  by the original width / height gives the same box in original pixels). Image
  ``{media_dir}/{file}.jpg``, audio ``{audio_dir}/{file}.wav``.
- ``synthetic``: released-format records (the embedded default's ``*_test.json``); targets
  come from the reference answer text and the image size / video duration.
- ``refcoco_res``, ``refcoco+_res``, ``refcocog_res``, ``gcg``, ``avsbench``: pixel grounding
  (tasks ``res``, ``gcg``, ``avs``), targets are masks; see
  `groundinggpt.evaluation.mask_benchmarks`.

Media names taken from an annotation (POPE ``image``, Charades video ids, VGGSS ``file``,
synthetic records' media paths) must stay inside their media folder: a name with ``..`` or an
absolute path elsewhere raises `ValueError` naming the file and the item, like any other
malformed item. The check is lexical (``os.path.normpath``), so benchmark folders made of
symlinks to the original datasets keep working.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from groundinggpt.data.media import (
    MediaError,
    check_media_file,
    media_errors,
)
from groundinggpt.evaluation.annotations import (
    as_paths,
    as_rows,
    existing_file,
    fill_prompt,
    media_file,
    query_text,
    read_json_or_jsonl,
    read_utf8,
    single_file,
)
from groundinggpt.evaluation.mask_benchmarks import MASK_PROMPTS
from groundinggpt.evaluation.sample import BenchmarkSample
from groundinggpt.grounding.format import (
    parse_box,
    parse_span,
    parse_yes_no,
)
from groundinggpt.grounding.geometry import box_from_padded

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
BENCHMARK_TASKS = {
    "refcoco": "rec",
    "refcoco+": "rec",
    "refcocog": "rec",
    "charades_sta": "vtg",
    "pope": "pope",
    "vggss": "sl",
    "synthetic": None,  # several tasks: each record says which
    "refcoco_res": "res",
    "refcoco+_res": "res",
    "refcocog_res": "res",
    "gcg": "gcg",
    "avsbench": "avs",
}
# Default prompts; "{query}" is the expression / sentence / question. REC follows
# GroundingGPT's "Output the coordinate of ..." style; POPE passes the question unchanged; the
# VTG and SL ones follow the synthetic generator's phrasing (data/synthetic/tasks.py). None
# of them could be checked against the released training data here (it is not reachable),
# so treat them as documented defaults and override `prompt` to match a checkpoint's data.
DEFAULT_PROMPTS = {
    "rec": "<image>\nOutput the coordinate of {query}.",
    "vtg": '<video>\nWhen does "{query}" happen in the video? Answer with a time span.',
    "pope": "<image>\n{query}",
    "sl": "<image>\n<sound>\nWhich object is making this sound? Answer with a bounding box.",
    **MASK_PROMPTS,  # res, gcg, avs: see mask_benchmarks
}
MEDIA_ORDER = ("image", "video", "sound")
SIZED_TASKS = ("rec", "sl", "res", "gcg", "avs")  # targets in pixels of the original image


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the image header (no decoding); `MediaError` if unreadable.

    Example:
        >>> image_size("data/coco/train2014/COCO_train2014_000000000009.jpg")  # doctest: +SKIP
        (640, 480)
    """
    from PIL import Image

    check_media_file(path, "image")
    with media_errors(path, "image"), Image.open(path) as img:  # decompression bombs too
        w, h = img.size
    if w <= 0 or h <= 0:
        raise MediaError(path, "image has zero size")
    return int(w), int(h)


def video_duration(path: str | Path) -> float:
    """Duration in seconds of a video file (decord); `MediaError` if unreadable.

    Example:
        >>> video_duration("data/charades_sta/videos/AO8RW.mp4")  # doctest: +SKIP
        30.08
    """
    from groundinggpt.data.media import VideoProcessor

    return VideoProcessor(num_frames=1, size=1).duration(path)


def _clean(values: Sequence[float]) -> list[float]:
    # Derived targets lose float noise (60.986999999999995 -> 60.987); 1e-6 px is nothing.
    return [round(float(v), 6) for v in values]


def _derive_target(sample: BenchmarkSample, meta: dict) -> Any:
    """Targets that need the image size / duration: from the normalised annotation in meta."""
    if "boxes_norm" in meta:  # VGGSS: fractions of the frame
        w, h = meta["width"], meta["height"]
        boxes = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in meta["boxes_norm"]]
        meta["boxes"] = [_clean(b) for b in boxes]
        return list(meta["boxes"][0])
    if "box_padded" in meta:  # released format: relative to the padded square
        box = _clean(box_from_padded(meta["box_padded"], meta["width"], meta["height"]))
        meta.setdefault("boxes", [box])
        return box
    if "span_frac" in meta:
        s, e = meta["span_frac"]
        return _clean([s * meta["duration"], e * meta["duration"]])
    raise ValueError(f"sample {sample.id}: no target and nothing to derive it from")


def _checked_size(path: str, meta: dict) -> tuple[int, int]:
    """The image's size; an annotated size that differs is an error, not a silent re-scale."""
    w, h = image_size(path)
    noted = (meta.get("width"), meta.get("height"))
    if None not in noted and (round(float(noted[0])), round(float(noted[1]))) != (w, h):
        raise MediaError(path, f"image is {w}x{h} but the annotation says {noted[0]}x{noted[1]}")
    return w, h


def complete_meta(sample: BenchmarkSample) -> BenchmarkSample:
    """A copy of ``sample`` with image size, video duration and the target filled in.

    Reads the image header (PIL, no decoding) for the pixel tasks (``rec``, ``sl``, ``res``,
    ``gcg``, ``avs``) and, if missing, the duration (decord) for ``vtg``. Checks every media
    file exists, and an ``avs`` target's mask PNG too.

    Raises:
        MediaError: a media file is missing, empty or unreadable, or an image's size differs
            from the annotated one (pixel boxes would not fit it).

    Example:
        >>> full = complete_meta(sample)  # doctest: +SKIP
        >>> full.meta["width"], full.meta["height"]  # doctest: +SKIP
        (640, 427)
    """
    meta = dict(sample.meta)
    for key, path in sample.media.items():
        check_media_file(path, "audio" if key == "sound" else key)
    if sample.task == "avs":
        check_media_file(sample.target, "image")  # the ground-truth mask PNG
    if sample.task in SIZED_TASKS:
        meta["width"], meta["height"] = _checked_size(sample.media["image"], meta)
    if sample.task == "vtg" and meta.get("duration") is None:
        meta["duration"] = video_duration(sample.media["video"])
    target = sample.target
    if target is None:
        target = _derive_target(sample, meta)
    return replace(sample, meta=meta, target=target)


def is_complete(sample: BenchmarkSample) -> bool:
    """Whether `score` and `BenchmarkSample.to_record` have all they need.

    Example:
        >>> is_complete(BenchmarkSample("1", "vtg", {"video": "/v.mp4"}, "<video>\\nq", [1, 2]))
        False
    """
    if sample.target is None:
        return False
    if sample.task in SIZED_TASKS:
        return sample.meta.get("width") is not None and sample.meta.get("height") is not None
    if sample.task == "vtg":
        return sample.meta.get("duration") is not None
    return True


# ----------------------------------------------------------------------------- charades_sta

_CHARADES_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\S+)\s*##(.*)$")


def _charades_line(path: Path, n: int, line: str) -> tuple[str, float, float, str]:
    match = _CHARADES_LINE.match(line)
    if not match:
        raise ValueError(f"{path}:{n}: expected 'VIDEOID start end##sentence', got {line!r}")
    video, start, end, sentence = match.groups()
    try:
        s, e = float(start), float(end)
    except ValueError as err:
        raise ValueError(f"{path}:{n}: start/end are not numbers: {line!r}") from err
    if not (math.isfinite(s) and math.isfinite(e)) or min(s, e) < 0:
        raise ValueError(f"{path}:{n}: start/end must be finite seconds >= 0: {line!r}")
    if not sentence.strip():
        raise ValueError(f"{path}:{n}: empty sentence: {line!r}")
    return video, s, e, sentence.strip()


def _read_charades_sta(
    annotation_file: Any, media_dir: Path, prompt: str, **_: Any
) -> list[BenchmarkSample]:
    """Charades-STA: one sample per line, target ``[start, end]`` seconds, duration later.

    Lines with ``start > end`` are swapped and counted in a warning (the target is a span).
    Ends past the video's duration are kept as annotated (IoU against the annotation).
    """
    path = single_file(annotation_file, "charades_sta")
    samples, swapped = [], 0
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        video, s, e, sentence = _charades_line(path, n, line)
        if s > e:
            s, e, swapped = e, s, swapped + 1
        samples.append(
            BenchmarkSample(
                id=f"{video}_{n}",
                task="vtg",
                media={"video": media_file(media_dir, f"{video}.mp4", f"{path}:{n}")},
                question=fill_prompt(prompt, query_text(sentence), "vtg"),
                target=[s, e],
                meta={"duration": None, "video_id": video, "sentence": sentence, "line": n},
            )
        )
    if swapped:
        log.warning("%s: %d lines had start > end; swapped", path, swapped)
    return samples


# -------------------------------------------------------------------------------------- pope

POPE_CATEGORIES = ("random", "popular", "adversarial")


def _pope_category(path: Path) -> str | None:
    for cat in POPE_CATEGORIES:
        if re.search(rf"(^|[_\-.]){cat}([_\-.]|$)", path.name):
            return cat
    return None


def _pope_files(annotation_file: Any, split: str | None) -> list[Path]:
    paths = []
    for p in as_paths(annotation_file):
        existing_file(p)
        paths += sorted(p.glob("*pope*.json*")) if p.is_dir() else [p]
    if split is not None:
        # A folder or several files: keep the split's file; one file: filter its records.
        named = [p for p in paths if _pope_category(p) == split]
        paths = named or paths
    if not paths:
        raise FileNotFoundError(f"no POPE question files in {annotation_file}")
    return paths


def _pope_label(path: Path, row: dict) -> str:
    label = str(row.get("label", "")).strip().lower()
    if label not in ("yes", "no"):
        raise ValueError(
            f"{path}: question {row.get('question_id')!r} has label {row.get('label')!r}, "
            "expected 'yes' or 'no' (use the official coco_pope_*.json files, which carry labels)"
        )
    return label


def _pope_rows(path: Path) -> list[dict]:
    rows = as_rows(read_json_or_jsonl(path), path)
    for r in rows:
        missing = [k for k in ("question_id", "image", "text") if k not in r]
        if missing:
            raise ValueError(f"{path}: question {r.get('question_id')!r} lacks {missing}")
    return rows


def _read_pope(
    annotation_file: Any, media_dir: Path, prompt: str, split: str | None = None, **_: Any
) -> list[BenchmarkSample]:
    """POPE: one sample per question; ``split`` (random/popular/adversarial) picks a category.

    The category is the record's ``category`` field, else the file name's. Ids are the
    ``question_id``; when several categories are read they become ``f"{category}_{id}"``.
    """
    if split is not None and split not in POPE_CATEGORIES:
        raise ValueError(f"POPE split must be one of {POPE_CATEGORIES} or null, got {split!r}")
    items = []
    for path in _pope_files(annotation_file, split):
        for row in _pope_rows(path):
            cat = row.get("category") or _pope_category(path)
            if split is None or cat == split:
                items.append((path, cat, row))
    if not items:
        raise ValueError(f"no POPE questions of category {split!r} in {annotation_file}")
    several = len({cat for _, cat, _ in items}) > 1
    return [
        BenchmarkSample(
            id=f"{cat}_{row['question_id']}" if several else str(row["question_id"]),
            task="pope",
            media={
                "image": media_file(
                    media_dir, str(row["image"]), f"{path}: question {row['question_id']!r}"
                )
            },
            question=fill_prompt(prompt, str(row["text"]).strip(), "pope"),
            target=_pope_label(path, row),
            meta={"category": cat, "question_id": row["question_id"], "text": row["text"]},
        )
        for path, cat, row in items
    ]


# ------------------------------------------------------------------------------------ vggss


def _vggss_boxes(path: Path, entry: dict, item: int = 0) -> list[list[float]]:
    """The entry's boxes, clipped to [0, 1] with sorted corners; `ValueError` naming ``path``,
    the item and the box for anything but lists of 4 JSON numbers in about [0, 1]."""
    where = f"{path}: item {item} ({entry.get('file')!r})"
    boxes = entry.get("bbox")
    ok = isinstance(boxes, list) and all(isinstance(b, list) for b in boxes)
    if not ok or not all(len(b) == 4 for b in boxes):
        raise ValueError(f"{where} needs 'bbox': [[x0, y0, x1, y1], ...], got {boxes!r}")
    for i, b in enumerate(boxes):
        bad = [v for v in b if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ValueError(
                f"{where}: bbox {i} {b!r} holds {bad[0]!r} ({type(bad[0]).__name__}); "
                "coordinates must be JSON numbers"
            )
    values = [float(v) for b in boxes for v in b]
    if not all(math.isfinite(v) for v in values) or max(values, default=0.0) > 2.0:
        raise ValueError(
            f"{where}: boxes must be finite fractions of the frame in "
            f"[0, 1], got {boxes} (pixel boxes are not the VGGSS format)"
        )
    # As the VGGSS evaluation: clip to [0, 1]; corners sorted.
    out = []
    for x0, y0, x1, y1 in ([min(max(float(v), 0.0), 1.0) for v in b] for b in boxes):
        out.append([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])
    return out


def _read_vggss(
    annotation_file: Any,
    media_dir: Path,
    prompt: str,
    audio_dir: Path | None = None,
    **_: Any,
) -> list[BenchmarkSample]:
    """VGGSS: one sample per clip; the pixel target is made by `complete_meta` (needs W, H).

    Entries with an empty ``bbox`` list have nothing to score against (public VGGSS loaders
    flag them as having no ground-truth map): they are left out with a warning that counts
    them. Malformed boxes raise.
    """
    if audio_dir is None:
        raise ValueError("vggss needs audio_dir (where {file}.wav live)")
    path = single_file(annotation_file, "vggss")
    entries = read_json_or_jsonl(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{file, class, bbox}}")
    samples, no_box = [], 0
    for item, entry in enumerate(entries):
        if not isinstance(entry, dict) or "file" not in entry:
            raise ValueError(f"{path}: item {item}: every entry needs a 'file' id, got {entry!r}")
        file_id, cls = str(entry["file"]), str(entry.get("class", ""))
        boxes = _vggss_boxes(path, entry, item)
        if not boxes:
            no_box += 1
            continue
        samples.append(
            BenchmarkSample(
                id=file_id,
                task="sl",
                media={
                    "image": media_file(media_dir, f"{file_id}.jpg", f"{path}: {file_id!r}"),
                    "sound": media_file(audio_dir, f"{file_id}.wav", f"{path}: {file_id!r}"),
                },
                question=fill_prompt(prompt, cls, "sl"),
                target=None,
                meta={"width": None, "height": None, "class": cls, "boxes_norm": boxes},
            )
        )
    if no_box:
        log.warning("%s: %d entries have no box and are not scored", path, no_box)
    return samples


# -------------------------------------------------------------------------------- synthetic

SYNTHETIC_TASKS = ("rec", "vtg", "pope", "sl")  # tasks of the released synthetic records
_TASK_FROM_NAME = re.compile(r"^(rec|vtg|sl|pope)_")
_PLACEHOLDER = re.compile(r"<(image|video|sound)>\n?")


def _synthetic_task(path: Path, record: dict) -> str:
    task = record.get("task")
    if task is None:
        match = _TASK_FROM_NAME.match(path.name)
        task = match.group(1) if match else None
    if task not in SYNTHETIC_TASKS:
        raise ValueError(
            f"{path}: record {record.get('id')!r} has task {task!r}; synthetic records score "
            f"only {sorted(SYNTHETIC_TASKS)}"
        )
    return task


def _synthetic_target(task: str, reference: str, meta: dict, where: str) -> Any:
    """The target from the reference text; pixel / second targets wait for the size."""
    if task == "pope":
        answer = parse_yes_no(reference)
        if answer is None:
            raise ValueError(f"{where}: reference {reference!r} is not yes/no")
        return "yes" if answer else "no"
    if task == "vtg":
        span = parse_span(reference)
        if span is None:
            raise ValueError(f"{where}: reference {reference!r} is not a time span")
        meta["span_frac"] = list(span)
        return None
    box = parse_box(reference)
    if box is None:
        raise ValueError(f"{where}: reference {reference!r} is not a box")
    meta["box_padded"] = list(box)
    return None


def _synthetic_meta(task: str, record: dict) -> dict:
    rmeta = record.get("meta") or {}
    meta: dict[str, Any] = {"record_meta": rmeta}
    if task in ("rec", "sl"):
        size = rmeta.get("size")
        meta["width"], meta["height"] = (size[0], size[1]) if size else (None, None)
    if task == "vtg":
        frames, fps = rmeta.get("num_frames"), rmeta.get("fps")
        meta["duration"] = frames / fps if frames and fps else None
    if task == "pope" and "category" in rmeta:
        meta["category"] = rmeta["category"]
    return meta


def _synthetic_sample(path: Path, n: int, record: dict, media_dir: Path, prompt: str | None):
    where = f"{path}[{n}]"
    task = _synthetic_task(path, record)
    convs = record.get("conversations") or []
    if len(convs) < 2:
        raise ValueError(f"{where}: record has no human/gpt conversation")
    question, reference = str(convs[0]["value"]), str(convs[1]["value"])
    if prompt is not None:  # the record's placeholders, then the template around its text
        prefix = "".join(m.group(0) if m.group(0).endswith("\n") else m.group(0) + "\n"
                         for m in _PLACEHOLDER.finditer(question))  # fmt: skip
        question = prefix + prompt.replace("{query}", _PLACEHOLDER.sub("", question).strip())
    meta = _synthetic_meta(task, record)
    target = _synthetic_target(task, reference, meta, where)
    media = {k: media_file(media_dir, str(record[k]), where) for k in MEDIA_ORDER if k in record}
    sample = BenchmarkSample(str(record.get("id", f"{path.stem}_{n}")), task, media, question,
                             target, meta)  # fmt: skip
    if target is None and (meta.get("width") or meta.get("duration")):
        sample.target = _derive_target(sample, sample.meta)  # size known: no file access
    return sample


def _read_synthetic(
    annotation_file: Any, media_dir: Path, prompt: str | None = None, **_: Any
) -> list[BenchmarkSample]:
    """Released-format records (several files allowed); media paths relative to ``media_dir``.

    ``prompt`` (optional) wraps each record's question text: the record's placeholders come
    first, then the template with ``{query}`` = the question without placeholders. Files are
    interleaved record by record, so that a ``limit`` keeps every task.
    """
    per_file = []
    for path in as_paths(annotation_file):
        records = as_rows(read_json_or_jsonl(existing_file(path)), path)
        per_file.append(
            [_synthetic_sample(path, n, r, media_dir, prompt) for n, r in enumerate(records)]
        )
    return [s for group in itertools.zip_longest(*per_file) for s in group if s is not None]


# ---------------------------------------------------------------------------- load_benchmark


def _readers() -> dict[str, Callable[..., list[BenchmarkSample]]]:
    from groundinggpt.evaluation.mask_benchmarks import read_avsbench, read_gcg, read_res
    from groundinggpt.evaluation.refer import read_refexp

    return {
        "refcoco": read_refexp,
        "refcoco+": read_refexp,
        "refcocog": read_refexp,
        "charades_sta": _read_charades_sta,
        "pope": _read_pope,
        "vggss": _read_vggss,
        "synthetic": _read_synthetic,
        "refcoco_res": read_res,
        "refcoco+_res": read_res,
        "refcocog_res": read_res,
        "gcg": read_gcg,
        "avsbench": read_avsbench,
    }


def _check_unique(samples: Sequence[BenchmarkSample], name: str) -> None:
    seen: set[str] = set()
    dupes = [s.id for s in samples if s.id in seen or seen.add(s.id)]
    if dupes:
        raise ValueError(f"benchmark {name!r}: duplicate sample ids {dupes[:5]} ({len(dupes)})")


def load_benchmark(
    name: str,
    annotation_file: PathLike | Sequence[PathLike],
    media_dir: PathLike,
    audio_dir: PathLike | None = None,
    split: str | None = None,
    prompt: str | None = None,
    limit: int | None = None,
    box_format: str = "xywh",
    subset: str | None = None,
) -> list[BenchmarkSample]:
    """Read a benchmark's official annotation into samples, in file order.

    Args:
        name: a key of `BENCHMARK_TASKS` (``refcoco``, ``charades_sta``, ``pope``, ``vggss``,
            ``synthetic``, ``refcoco_res``, ``gcg``, ``avsbench``, ...).
        annotation_file: the official file (a list of files for ``synthetic`` / ``pope``;
            a folder for ``pope`` and the refer toolkit).
        media_dir: folder of the images / videos (``synthetic``: the dataset root).
        audio_dir: folder of the audio files (``vggss``, ``avsbench``).
        split: REC / RES: ``val``/``testA``/``testB``/``test``...; POPE: category; GCG:
            ``val``/``test``; AVSBench: ``train``/``val``/``test``; else unused.
        prompt: template with ``{query}``; ``None`` -> the benchmark's default
            (`DEFAULT_PROMPTS`; ``synthetic``: each record's own question).
        limit: keep the first ``limit`` samples (after the split is selected).
        box_format: REC JSON exports only: how a plain ``bbox`` field is read
            (``"xywh"``, COCO's, or ``"xyxy"``).
        subset: AVSBench only: ``s4`` or ``ms3`` (``None``: from the csv's file name).

    Raises:
        FileNotFoundError: the annotation file is missing.
        ValueError: unknown name, wrong split, or a malformed annotation.

    Example:
        >>> samples = load_benchmark("pope", "data/pope/coco", "data/coco/val2014",
        ...                          split="adversarial", limit=10)  # doctest: +SKIP
        >>> samples[0].question  # doctest: +SKIP
        '<image>\\nIs there a snowboard in the image?'
    """
    if name not in BENCHMARK_TASKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARK_TASKS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    task = BENCHMARK_TASKS[name]
    template = prompt if prompt is not None or task is None else DEFAULT_PROMPTS[task]
    samples = _readers()[name](
        annotation_file=annotation_file,
        media_dir=Path(media_dir).expanduser().absolute(),
        audio_dir=Path(audio_dir).expanduser().absolute() if audio_dir is not None else None,
        split=split,
        prompt=template,
        name=name,
        box_format=box_format,
        subset=subset,
    )
    _check_unique(samples, name)
    if not samples:
        raise ValueError(f"benchmark {name!r} has no samples in {annotation_file}")
    log.info("benchmark %s: %d samples (split %s)", name, len(samples), split)
    return samples if limit is None else samples[:limit]
