"""RefCOCO / RefCOCO+ / RefCOCOg readers: the refer toolkit's pickle and JSON(L) exports.

One sample per referring *expression* (never per image or per object): its id is
``f"{ref_id}_{sent_id}"``, its target the object's box in pixels of the original image as
``[x0, y0, x1, y1]`` (COCO ``[x, y, w, h]`` -> corners).

Accepted annotation files:

1. The refer toolkit release: ``refs(unc).p`` (RefCOCO, RefCOCO+) or ``refs(umd).p`` /
   ``refs(google).p`` (RefCOCOg) with ``instances.json`` in the same folder; pass the pickle
   or the folder (which must then hold exactly one ``refs(*).p``). The pickle is read by
   `PlainUnpickler`, which admits only plain Python types (dicts, lists, strings, numbers):
   a pickle naming any class or function is refused instead of executed.
2. An MDETR-style COCO file (``final_refcoco_testA.json``): ``images`` entries are the
   expressions (``caption``, ``file_name``, ``width``, ``height``, ``id``) and each has one
   ``annotations`` entry with its ``bbox`` ``[x, y, w, h]``.
3. A JSON list or JSONL with one object per expression (or per object with a
   ``sentences`` list). Field names, first match wins:

   - image: ``image``, ``img_path``, ``image_path``, ``file_name``, ``img_name``, ``image_file``
   - expression: ``sentence``, ``expression``, ``sent``, ``referring_expression``, ``ref``,
     ``text``, ``caption``, ``query``; or ``sentences`` (strings or ``{"sent"|"raw"}``)
   - box: ``bbox_xyxy`` / ``box_xyxy`` (corners), ``bbox_xywh`` (COCO), or ``bbox`` read as
     the record's ``bbox_format`` field if any, else the ``box_format`` argument ("xywh")
   - size (optional, read from the image header otherwise): ``width``/``height``,
     ``img_w``/``img_h``, ``image_width``/``image_height``
   - id: ``ref_id`` + ``sent_id``, else ``id``, ``question_id``, ``sample_id``,
     ``expression_id``, else the line number
   - split (optional): ``split``; when no record has one the file is taken as the split.

   A box that does not fit its image (with known size) raises: the usual cause is an
   ``[x0, y0, x1, y1]`` file read as ``[x, y, w, h]``.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

from groundinggpt.evaluation.annotations import (
    as_rows,
    existing_file,
    fill_prompt,
    query_text,
    read_json_or_jsonl,
    read_utf8,
    single_file,
)
from groundinggpt.evaluation.sample import BenchmarkSample

log = logging.getLogger(__name__)

IMAGE_KEYS = ("image", "img_path", "image_path", "file_name", "img_name", "image_file")
SENTENCE_KEYS = (
    "sentence", "expression", "sent", "referring_expression", "ref", "text", "caption", "query",
)  # fmt: skip
SIZE_KEYS = (("width", "height"), ("img_w", "img_h"), ("image_width", "image_height"))
ID_KEYS = ("id", "question_id", "sample_id", "expression_id")
BOX_FORMATS = ("xywh", "xyxy")
SIZE_SLACK = 1.0  # pixels a box may pass the image border (rounding in exports)


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that admits only plain Python types: no class or function is looked up.

    Dicts, lists, tuples, strings, bytes, numbers, booleans and None need no lookup; any
    class or function (``OrderedDict``, ``os.system``, every object's ``__reduce__``) needs
    `find_class`, which raises, so a malicious pickle cannot run code.

    Example:
        >>> import io, pickle
        >>> PlainUnpickler(io.BytesIO(pickle.dumps({"a": [1, 2.0, "x"]}))).load()
        {'a': [1, 2.0, 'x']}
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: annotation pickles may hold only plain "
            "Python types (dict, list, str, numbers)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id in an annotation pickle")


def load_plain_pickle(path: str | Path) -> Any:
    """Load a pickle of plain Python types (see `PlainUnpickler`), Python 2 ones included.

    Python 2 byte strings are decoded as UTF-8, falling back to Latin-1 (logged).
    """
    path = existing_file(Path(path))
    for encoding in ("utf-8", "latin1"):
        with path.open("rb") as f:
            try:
                return PlainUnpickler(f, encoding=encoding).load()
            except UnicodeDecodeError:
                log.warning("%s: not UTF-8, reading Python 2 strings as Latin-1", path)
    raise AssertionError("unreachable: latin1 decodes every byte")


# ------------------------------------------------------------------------------ refer toolkit


def _refer_files(path: Path) -> tuple[Path, Path]:
    """``(refs pickle, instances.json)`` from the pickle or its folder."""
    if path.is_dir():
        pickles = sorted(path.glob("refs(*).p"))
        if len(pickles) != 1:
            raise ValueError(
                f"{path}: expected exactly one refs(*).p, found {[p.name for p in pickles]}; "
                "pass the pickle itself"
            )
        path = pickles[0]
    instances = path.parent / "instances.json"
    return path, existing_file(instances, "instances.json (next to the refs pickle)")


def xywh_to_xyxy(box: Any, where: str) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x0, y0, x1, y1]``; `ValueError` naming ``where`` if malformed.

    Example:
        >>> xywh_to_xyxy([4, 6, 20, 10], "annotation 101")
        [4.0, 6.0, 24.0, 16.0]
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{where}: bbox must be 4 numbers, got {box!r}")
    x, y, w, h = (float(v) for v in box)
    if w < 0 or h < 0:
        raise ValueError(f"{where}: bbox [x, y, w, h] has a negative size: {box!r}")
    return [x, y, x + w, y + h]


def _check_split(split: str | None, available: set, where: Path) -> None:
    if split is None:
        raise ValueError(f"{where}: choose a split, one of {sorted(available)}")
    if split not in available:
        raise ValueError(f"{where}: no split {split!r}; available: {sorted(available)}")


def _refer_samples(ref: dict, image: dict, ann: dict, media_dir: Path, prompt: str):
    box = xywh_to_xyxy(ann["bbox"], f"annotation {ann.get('id')}")
    for sent in ref["sentences"]:
        text = sent.get("sent") or sent.get("raw") or ""
        yield BenchmarkSample(
            id=f"{ref['ref_id']}_{sent['sent_id']}",
            task="rec",
            media={"image": str(media_dir / image["file_name"])},
            question=fill_prompt(prompt, query_text(text), "rec"),
            target=list(box),
            meta={"width": image.get("width"), "height": image.get("height"),
                  "ref_id": ref["ref_id"], "sent_id": sent["sent_id"], "ann_id": ref["ann_id"],
                  "image_id": ref["image_id"], "sentence": text, "raw": sent.get("raw")},
        )  # fmt: skip


def refer_objects(path: Path, split: str | None) -> tuple[Path, list[tuple[dict, dict, dict]]]:
    """The refs of ``split`` in the refer toolkit's pickle, each with its image and object.

    Shared by the box (``rec``) and mask (``res``) readers: both score one object per ref.

    Args:
        path: ``refs(*).p`` or its folder; ``instances.json`` must lie beside it.
        split: the refs' ``split`` to keep (required).

    Returns:
        ``(instances.json path, [(ref, image entry, annotation entry), ...])`` in pickle order.

    Raises:
        ValueError: no such split, or a ref that lacks a field or points at a missing
            image / annotation (naming the pickle and the ref).

    Example:
        >>> instances, objects = refer_objects(Path("data/refcoco/refs(unc).p"), "testA")
        ...  # doctest: +SKIP
        >>> ref, image, ann = objects[0]  # doctest: +SKIP
    """
    refs_path, instances_path = _refer_files(path)
    refs = load_plain_pickle(refs_path)
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{refs_path}: expected a list of ref dicts")
    _check_split(split, {r.get("split") for r in refs}, refs_path)
    instances = json.loads(read_utf8(instances_path))
    images = {img["id"]: img for img in instances["images"]}
    anns = {ann["id"]: ann for ann in instances["annotations"]}
    objects = []
    for ref in (r for r in refs if r.get("split") == split):
        missing = [k for k in ("ref_id", "ann_id", "image_id", "sentences") if k not in ref]
        if missing:
            raise ValueError(f"{refs_path}: ref {ref.get('ref_id')!r} lacks {missing}")
        if ref["image_id"] not in images or ref["ann_id"] not in anns:
            raise ValueError(
                f"{refs_path}: ref {ref['ref_id']} points at image {ref['image_id']} / "
                f"annotation {ref['ann_id']}, missing from {instances_path}"
            )
        objects.append((ref, images[ref["image_id"]], anns[ref["ann_id"]]))
    return instances_path, objects


def _read_refer_pickle(
    path: Path, media_dir: Path, prompt: str, split: str | None
) -> list[BenchmarkSample]:
    """The refer toolkit's ``refs(*).p`` + ``instances.json``: one sample per sentence."""
    samples = []
    for ref, image, ann in refer_objects(path, split)[1]:
        samples += _refer_samples(ref, image, ann, media_dir, prompt)
    return samples


# ---------------------------------------------------------------------------- JSON exports


def _read_mdetr(data: dict, path: Path, media_dir: Path, prompt: str) -> list[BenchmarkSample]:
    """MDETR-style COCO file: each ``images`` entry is one expression with one annotation."""
    by_image: dict[Any, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for img in data["images"]:
        anns = by_image.get(img["id"], [])
        if len(anns) != 1 or "caption" not in img:
            raise ValueError(
                f"{path}: image entry {img['id']} needs a caption and exactly one annotation, "
                f"has {len(anns)}"
            )
        samples.append(
            BenchmarkSample(
                id=str(img["id"]),
                task="rec",
                media={"image": str(media_dir / img["file_name"])},
                question=fill_prompt(prompt, query_text(img["caption"]), "rec"),
                target=xywh_to_xyxy(anns[0]["bbox"], f"{path}: entry {img['id']}"),
                meta={"width": img.get("width"), "height": img.get("height"),
                      "sentence": img["caption"], "image_id": img.get("original_id")},
            )
        )  # fmt: skip
    return samples


def _first(record: dict, keys: tuple[str, ...]) -> Any:
    return next((record[k] for k in keys if record.get(k) is not None), None)


def _export_box(record: dict, box_format: str, where: str) -> list[float]:
    if record.get("bbox_xyxy") is not None or record.get("box_xyxy") is not None:
        box, fmt = _first(record, ("bbox_xyxy", "box_xyxy")), "xyxy"
    elif record.get("bbox_xywh") is not None:
        box, fmt = record["bbox_xywh"], "xywh"
    elif record.get("bbox") is not None:
        box, fmt = record["bbox"], record.get("bbox_format", box_format)
    else:
        raise ValueError(f"{where}: no bbox / bbox_xywh / bbox_xyxy field")
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{where}: bbox_format must be one of {BOX_FORMATS}, got {fmt!r}")
    if fmt == "xywh":
        return xywh_to_xyxy(box, where)
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"{where}: bbox must be 4 numbers, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{where}: [x0, y0, x1, y1] box with x1 < x0 or y1 < y0: {box!r}")
    return [x0, y0, x1, y1]


def _check_fits(box: list[float], w: Any, h: Any, where: str) -> None:
    if w is None or h is None:
        return
    if (
        box[0] < -SIZE_SLACK
        or box[1] < -SIZE_SLACK
        or box[2] > w + SIZE_SLACK
        or (box[3] > h + SIZE_SLACK)
    ):
        raise ValueError(
            f"{where}: box {box} does not fit the {w}x{h} image; is the file's bbox "
            "[x0, y0, x1, y1]? Then set box_format=xyxy (or a bbox_format field)"
        )


def _sentences(record: dict, where: str) -> list[tuple[str | None, str]]:
    """``(sentence id or None, text)`` for every expression of the record."""
    if isinstance(record.get("sentences"), list):
        out = []
        for k, s in enumerate(record["sentences"]):
            if isinstance(s, dict):
                out.append((str(s.get("sent_id", k)), s.get("sent") or s.get("raw") or ""))
            else:
                out.append((str(k), str(s)))
        return out
    text = _first(record, SENTENCE_KEYS)
    if text is None:
        raise ValueError(f"{where}: no expression field (one of {SENTENCE_KEYS} or sentences)")
    return [(None, str(text))]


def _export_id(record: dict, line: int, sent_id: str | None) -> str:
    if record.get("ref_id") is not None and (sent_id or record.get("sent_id")) is not None:
        return f"{record['ref_id']}_{sent_id if sent_id is not None else record['sent_id']}"
    base = _first(record, ID_KEYS)
    base = str(base) if base is not None else str(line)
    return base if sent_id is None else f"{base}_{sent_id}"


def _export_size(record: dict, where: str) -> tuple[int | None, int | None]:
    for a, b in SIZE_KEYS:
        if record.get(a) is not None and record.get(b) is not None:
            try:
                w, h = round(float(record[a])), round(float(record[b]))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: {a}/{b} must be numbers") from err
            if w <= 0 or h <= 0:
                raise ValueError(f"{where}: image size must be positive, got {w}x{h}")
            return w, h
    return None, None


def _export_samples(record: dict, line: int, path: Path, media_dir: Path, prompt: str,
                    box_format: str) -> list[BenchmarkSample]:  # fmt: skip
    where = f"{path}[{line}]"
    image = _first(record, IMAGE_KEYS)
    if image is None:
        raise ValueError(f"{where}: no image field (one of {IMAGE_KEYS})")
    w, h = _export_size(record, where)
    box = _export_box(record, box_format, where)
    _check_fits(box, w, h, where)
    return [
        BenchmarkSample(
            id=_export_id(record, line, sent_id),
            task="rec",
            media={"image": str(media_dir / str(image))},
            question=fill_prompt(prompt, query_text(text), "rec"),
            target=list(box),
            meta={"width": w, "height": h, "sentence": text, "line": line},
        )
        for sent_id, text in _sentences(record, where)
    ]


def _read_export(
    path: Path, media_dir: Path, prompt: str, split: str | None, box_format: str
) -> list[BenchmarkSample]:
    """A JSON/JSONL export (one object per expression) or an MDETR-style COCO file."""
    data = read_json_or_jsonl(path)
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return _read_mdetr(data, path, media_dir, prompt)
    data = as_rows(data, path)
    if any("split" in r for r in data):
        _check_split(split, {r.get("split") for r in data}, path)
        rows = [(n, r) for n, r in enumerate(data) if r.get("split") == split]
    else:  # a per-split export: the file is the split
        rows = list(enumerate(data))
    samples = []
    for n, record in rows:
        samples += _export_samples(record, n, path, media_dir, prompt, box_format)
    return samples


def read_refexp(
    annotation_file: Any,
    media_dir: Path,
    prompt: str,
    split: str | None = None,
    box_format: str = "xywh",
    **_: Any,
) -> list[BenchmarkSample]:
    """RefCOCO/+/g samples, one per expression, from any accepted file (module docstring).

    Args:
        annotation_file: ``refs(*).p`` (``instances.json`` beside it), its folder, or a
            JSON/JSONL export.
        media_dir: folder of the COCO images (``train2014``).
        prompt: template with ``{query}`` and ``<image>``.
        split: ``val``/``testA``/``testB`` (UNC), ``val``/``test`` (UMD); required for the
            pickle and for exports with a ``split`` field.
        box_format: how a plain ``bbox`` of an export is read: ``"xywh"`` or ``"xyxy"``.

    Example:
        >>> samples = read_refexp("data/refcoco/refs(unc).p", Path("data/coco/train2014"),
        ...                       "<image>\\nOutput the coordinate of {query}.", "testA")
        ...  # doctest: +SKIP
        >>> samples[0].id, samples[0].target  # doctest: +SKIP
        ('47_127', [103.93, 299.99, 238.15, 477.41])
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, got {box_format!r}")
    path = single_file(annotation_file, "refcoco")
    if path.is_dir() or path.suffix in (".p", ".pkl", ".pickle"):
        return _read_refer_pickle(path, media_dir, prompt, split)
    return _read_export(path, media_dir, prompt, split, box_format)
