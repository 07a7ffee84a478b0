"""Datasets over records in the released GroundingGPT format, and their collator.

Bad input policy: a record that cannot become a sample (missing or unreadable media, broken
conversation, malformed box, too long...) is, with ``on_error="skip"``, returned as
``{"skipped": kind, ...}`` (the collator drops it and reports it in the batch, the training
callbacks count it per reason), or, with ``on_error="raise"``, raised as `SampleError`. Cheap
text checks run before any media is decoded. A media path that leads outside its media root
(``..``, an absolute path elsewhere, a symlink out of the root) is skipped as
``path_outside_root`` unless ``allow_absolute_media_paths``. An annotation file that holds no
records at all fails when the dataset is built (`AnnotationFileError`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from groundinggpt.data.conversation import (
    IGNORE_INDEX,
    ConversationFormatter,
    count_placeholders,
    pad_sequences,
)
from groundinggpt.data.media import MediaError, confined_path, media_errors
from groundinggpt.data.packing import pack_rows, packed_positions
from groundinggpt.data.records import AnnotationFileError, RecordStore, SampleError, read_records
from groundinggpt.data.segmentation import count_seg_tokens, record_masks
from groundinggpt.data.validation import (
    check_conversations,
    check_grounding_text,
    check_modalities,
    is_chat_task,
)
from groundinggpt.grounding.geometry import box_to_padded
from groundinggpt.modalities import REGION_TOKEN

__all__ = [
    "AnnotationFileError",
    "ConversationDataset",
    "GroundingCollator",
    "RecordEncoder",
    "SampleError",
    "read_records",
    "resolve_media_roots",
]

log = logging.getLogger(__name__)

# Skips logged one by one per (dataset, reason) before the log goes quiet; every skip is
# still counted and summarised at the end of the run.
_LOG_FIRST = 20


def _reason_of(err: Exception) -> str:
    if isinstance(err, (SampleError, MediaError)):
        return err.kind
    return "malformed_record"  # KeyError / TypeError / ValueError from a record's structure


def resolve_media_roots(
    media_root: str | Path | Mapping[str, str | Path],
    modalities: Iterable[str],
    override: str | Path | Mapping[str, str | Path] | None = None,
) -> dict[str, Path]:
    """The media folder of each modality: ``media_root`` (one folder, or one per modality),
    replaced by a dataset's own ``override`` (one folder for all, or some modalities').

    Raises:
        ValueError: a modality is left without a folder.

    Example:
        >>> resolve_media_roots("data", ["image", "video"], {"video": "/videos"})
        {'image': PosixPath('data'), 'video': PosixPath('/videos')}
    """
    modalities = list(modalities)
    if isinstance(media_root, (str, Path)):
        roots = dict.fromkeys(modalities, media_root)
    else:
        roots = dict(media_root)
    if isinstance(override, (str, Path)):
        roots = dict.fromkeys(modalities, override)
    elif override:
        roots.update(override)
    missing = set(modalities) - set(roots)
    if missing:
        raise ValueError(f"media_root has no folder for modalities {sorted(missing)}")
    return {m: Path(roots[m]) for m in modalities}


class RecordEncoder:
    """One record -> token ids, labels and decoded media: the encoding training and evaluation
    share (`ConversationDataset` over annotation files, the benchmark dataset of ``eval.py``
    over benchmark samples).

    Cheap text checks (conversation structure, media keys against placeholders, box/span
    syntax) run before any media is decoded.

    Args:
        formatter: renders and tokenises the conversation.
        processors: ``{"image": ImageProcessor, ...}``: path -> tensor per modality.
        max_length: longest token sequence. Longer conversations keep their longest prefix
            of whole turns that fits; one whose first answer or media does not fit is refused.
        media_roots: folder the media paths are relative to, per modality.
        check_grounding: refuse records whose boxes/spans are malformed.
        allow_absolute_media_paths: use media paths as given instead of confining them to
            their media root.

    Example:
        >>> encode = RecordEncoder(fmt, {"image": proc}, 512, {"image": Path("data")})
        >>> encode(record, task="rec", dataset="rec_train")["input_ids"][:5]
    """

    def __init__(
        self,
        formatter: ConversationFormatter,
        processors: Mapping[str, Callable[[Path], torch.Tensor]],
        max_length: int,
        media_roots: Mapping[str, Path],
        check_grounding: bool = True,
        allow_absolute_media_paths: bool = False,
    ) -> None:
        self.formatter = formatter
        self.processors = dict(processors)
        self.max_length = max_length
        self.media_roots = dict(media_roots)
        self.check_grounding = check_grounding
        self.allow_absolute_media_paths = bool(allow_absolute_media_paths)
        self._record_keys = {s.record_key for s in formatter.specs.values()}
        self._placeholders = {s.placeholder for s in formatter.specs.values()}
        self.feature_caches: dict[str, Any] = {}

    def read_cached_features(self, caches: Mapping[str, Any]) -> None:
        """Read the frozen encoder's features of a media file from ``caches[modality]``
        (a `groundinggpt.models.feature_cache.FeatureCache`) instead of decoding the file.

        A hit puts the features into the sample's ``cached_features`` (the file is not
        opened beyond its digest); a miss decodes as before. Samples with regions or masks
        always decode their image (the region encoder and SAM read pixels).
        """
        self.feature_caches = dict(caches)

    def length(self, record: Mapping[str, Any]) -> int:
        """Tokens of ``record`` once encoded (at most ``max_length``), media not decoded."""
        ids, _ = self.formatter.encode(check_conversations(record))
        return min(len(ids), self.max_length)

    def _media_paths(self, record: Mapping[str, Any], convs: list) -> dict[str, Path]:
        """Modality -> file of the record, after checking placeholders against media keys."""
        paths = {}
        for name, spec in self.formatter.specs.items():
            rel = record.get(spec.record_key)
            n_ph = count_placeholders(convs, spec.placeholder)
            if rel is None and n_ph == 0:
                continue
            if rel is not None and n_ph == 0:
                raise SampleError(
                    "media_without_placeholder",
                    f"{spec.record_key} given but no {spec.placeholder}",
                )
            if rel is None or n_ph != 1 or not isinstance(rel, str):
                given = "no" if rel is None else repr(rel)
                raise SampleError(
                    "placeholder_mismatch",
                    f"{n_ph} {spec.placeholder} for {given} {spec.record_key}",
                )
            if name not in self.processors:
                raise SampleError("unknown_modality", f"no processor for modality {name!r}")
            paths[name] = self._media_path(name, rel)
        return paths

    def _media_path(self, modality: str, rel: str) -> Path:
        """``media_root / rel``; `MediaError` ``path_outside_root`` if it leaves the root."""
        root = self.media_roots[modality]
        if self.allow_absolute_media_paths:
            return root / rel
        return confined_path(root, rel)

    def _fit(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int], bool]:
        """Shorten a too-long conversation to its longest prefix of whole turns that fits.

        The cut falls right after an answer's ``</s>``, so no answer is trained half-cut and
        no media block is cut through; a conversation whose first answer (or a media block)
        does not fit is skipped as ``too_long``.
        """
        if len(ids) <= self.max_length:
            return ids, labels, False
        answer_ends = [
            i + 1
            for i, lab in enumerate(labels)
            if lab != IGNORE_INDEX and (i + 1 == len(labels) or labels[i + 1] == IGNORE_INDEX)
        ]
        fitting = [end for end in answer_ends if end <= self.max_length]
        if not fitting:
            raise SampleError(
                "too_long", f"the first answer ends after max_length {self.max_length}"
            )
        cut = fitting[-1]
        ends = self.formatter.media_end_ids
        if any(t in ends for t in ids[cut:]):
            raise SampleError("too_long", f"a media block lies after max_length {self.max_length}")
        return ids[:cut], labels[:cut], True

    def __call__(
        self, record: Mapping[str, Any], task: str, dataset: str, index: int = 0
    ) -> dict[str, Any]:
        """The sample of ``record`` (of ``task``, from ``dataset``, at ``index`` there).

        Raises:
            SampleError, MediaError, KeyError, TypeError, ValueError: the record cannot become
                a sample (the dataset turns these into counted skips or raises them).
        """
        convs = check_conversations(record)
        check_modalities(record, self._record_keys, self._placeholders)
        if self.check_grounding:  # number lists in free chat are text, not boxes
            strict = not is_chat_task(task)
            for turn in convs:
                check_grounding_text(turn["value"], strict=strict)
        paths = self._media_paths(record, convs)
        encoded = self.formatter.encode(convs)
        input_ids, labels, truncated = self._fit(*encoded)
        segment = self._segmentation(record, paths, encoded, (input_ids, labels))
        regions = self._regions(record, paths, encoded, (input_ids, labels))
        media, cached = self._media(paths, needs_pixels=segment is not None or regions is not None)
        # The first answer's first label ends the first prompt: no second tokenisation needed.
        first_answer = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        sample = {
            "id": str(record.get("id", index)),
            "task": task,
            "dataset": dataset,
            "input_ids": input_ids,
            "labels": labels,
            "prompt_ids": input_ids[:first_answer],
            "reference": convs[1]["value"],
            "prompt": convs[0]["value"],
            "media": media,
            "media_paths": {m: str(p) for m, p in paths.items()},
            "truncated": truncated,
        }
        if cached:
            sample["cached_features"] = cached
        if segment is not None:
            sample["segment"] = segment
        if regions is not None:
            sample["regions"], sample["prompt_regions"] = regions
        return sample

    def _media(
        self, paths: Mapping[str, Path], needs_pixels: bool
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Decoded media and cached encoder features of ``paths`` (each file in one of them)."""
        media, cached = {}, {}
        for name, path in paths.items():
            cache = None if needs_pixels else self.feature_caches.get(name)
            features = cache.get(path) if cache is not None else None
            if features is None:
                media[name] = self.processors[name](path)
            else:
                cached[name] = features
        return media, cached

    def _segmentation(self, record, paths, encoded, kept) -> dict[str, Any] | None:
        """SAM's view of the image and one mask per kept ``[SEG]`` (`data/segmentation.py`).

        None for a record without masks and ``[SEG]``; a record whose ``[SEG]`` count differs
        from its masks, or with masks but no image or no ``segment`` processor, is skipped.
        """
        seg_id = self.formatter.seg_token_id
        n_total = 0 if seg_id is None else count_seg_tokens(*encoded, seg_id)
        if "masks" not in record and n_total == 0:
            return None
        masks = record_masks(record, count_seg_tokens(*kept, seg_id) if n_total else 0, n_total)
        if "segment" not in self.processors:
            raise SampleError("unknown_modality", "masks given but no `segment` processor")
        if "image" not in paths:
            raise SampleError("mask_without_image", "masks need the record's image")
        return self.processors["segment"](paths["image"], masks)

    def _regions(self, record, paths, encoded, kept) -> tuple[torch.Tensor, int] | None:
        """The boxes of the kept ``<region>`` tokens, ``(n, 4)`` fractions of the padded square,
        and how many of them lie in the first prompt.

        None for a record without ``regions`` and ``<region>`` (or whose regions all lie in
        turns cut by truncation). A record whose ``<region>`` count in the human turns differs
        from its boxes (also when the tokenizer has no ``<region>``: a model without a region
        encoder) is skipped as ``region_count_mismatch``.
        """
        region_id = self.formatter.region_token_id
        ids, labels = encoded
        n_total = 0 if region_id is None else ids.count(region_id)
        if "regions" not in record and n_total == 0:
            return None
        in_prompts = sum(
            1 for t, lab in zip(ids, labels, strict=True) if t == region_id and lab == IGNORE_INDEX
        )
        boxes = record_regions(record, n_total if in_prompts == n_total else -1)
        if "image" not in paths:
            raise SampleError("region_without_image", "regions need the record's image")
        kept_ids, kept_labels = kept
        n_kept = kept_ids.count(region_id) if region_id is not None else 0
        if n_kept == 0:
            return None
        width, height = _image_size(paths["image"])
        fractions = [box_to_padded(_checked_box(b, width, height), width, height) for b in boxes]
        first_answer = next(i for i, lab in enumerate(kept_labels) if lab != IGNORE_INDEX)
        n_prompt = kept_ids[:first_answer].count(region_id)
        return torch.tensor(fractions[:n_kept], dtype=torch.float32), n_prompt


class ConversationDataset(Dataset):
    """Records -> token ids, labels and decoded media, one sample per record.

    Args:
        path: JSON list or JSONL of ``{"id", "image"|"video"|"sound", "conversations"}`` records
            (read lazily, see `RecordStore`), or the records themselves (a list of dicts, e.g.
            from a benchmark reader).
        media_root: folder the records' media paths are relative to, or one folder per
            modality (``{"image": ..., "video": ..., "audio": ...}``).
        formatter: renders and tokenises the conversation.
        processors: ``{"image": ImageProcessor, ...}``: path -> tensor per modality.
        max_length: longest token sequence. Longer conversations keep their longest prefix
            of whole turns that fits; one whose first answer or media does not fit is skipped.
        task: task name for records that carry none (``rec``, ``vtg``, ``caption``...).
        name: dataset name used in logs and counts (defaults to the file stem).
        on_error: ``"skip"`` returns ``{"skipped": reason, ...}`` for a bad record (the
            collator reports it) or ``"raise"`` raises `SampleError`.
        check_grounding: reject records whose boxes/spans are malformed (see
            :func:`check_grounding_text`; strict except in chat tasks, `is_chat_task`).
        allow_absolute_media_paths: use record media paths as given. By default a path must
            lie inside its media root after normalisation and symlink resolution (see
            `confined_path`), else the record is skipped as ``path_outside_root``; with this
            switch absolute paths, and relative ones leaving the root (e.g. through
            symlinked folders), are accepted.

    Raises:
        AnnotationFileError: ``path`` is empty, not UTF-8 or not a list of records.

    Example:
        >>> ds = ConversationDataset("annotations/rec_train.json", root, fmt, {"image": proc}, 512)
        >>> ds[0]["input_ids"][:5]
    """

    def __init__(
        self,
        path: str | Path | Sequence[Mapping[str, Any]],
        media_root: str | Path | Mapping[str, str | Path],
        formatter: ConversationFormatter,
        processors: Mapping[str, Callable[[Path], torch.Tensor]],
        max_length: int,
        task: str | None = None,
        name: str | None = None,
        on_error: str = "skip",
        check_grounding: bool = True,
        allow_absolute_media_paths: bool = False,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if isinstance(path, (str, Path)):
            self.path, self.records = Path(path), RecordStore(path)
        else:
            self.path, self.records = Path(name or "records"), list(path)
        self.encoder = RecordEncoder(
            formatter,
            processors,
            max_length,
            resolve_media_roots(media_root, formatter.specs),
            check_grounding,
            allow_absolute_media_paths,
        )
        self.formatter, self.processors = formatter, self.encoder.processors
        self.max_length = max_length
        self.task = task
        self.name = name or self.path.stem
        self.on_error = on_error
        self._logged: Counter[str] = Counter()

    @property
    def media_root(self) -> Path:
        """The common media folder (the first modality's, when they differ)."""
        return next(iter(self.encoder.media_roots.values()))

    def __len__(self) -> int:
        return len(self.records)

    def task_of(self, record: Mapping[str, Any]) -> str:
        return record.get("task") or self.task or "unknown"

    def length(self, index: int) -> int:
        """Tokens of record ``index`` once encoded (at most ``max_length``), media not decoded.

        For length-grouped batching; a record that cannot be encoded counts 0 (it is skipped,
        and counted, when it is read for training).
        """
        try:
            return self.encoder.length(self.records[index])
        except (SampleError, KeyError, TypeError, ValueError):
            return 0

    def reference(self, index: int) -> str:
        """The first answer of record ``index`` (the target that evaluation compares with)."""
        return self.records[index]["conversations"][1]["value"]

    def _build(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        return self.encoder(record, self.task_of(record), self.name, index)

    def _skip(self, index: int, err: Exception) -> dict[str, Any]:
        reason = _reason_of(err)
        where = err.path if isinstance(err, MediaError) else f"{self.path}[{index}]"
        key = f"{self.name}/{reason}"
        self._logged[key] += 1
        if self._logged[key] <= _LOG_FIRST:
            quiet = (
                " (further ones of this kind are only counted)"
                if self._logged[key] == _LOG_FIRST
                else ""
            )
            log.warning("skipped %s [%s] %s: %s%s", self.name, reason, where, err, quiet)
        return {
            "skipped": reason,
            "dataset": self.name,
            "index": index,
            "id": self._record_id(index),
            "file": where,
            "detail": str(err),
        }

    def _record_id(self, index: int) -> str:
        try:
            return str(self.records[index].get("id", index))
        except (SampleError, AttributeError):
            return str(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self._build(index)
        except (SampleError, MediaError, KeyError, TypeError, ValueError) as err:
            if self.on_error == "raise":
                raise SampleError(_reason_of(err), f"{self.path}[{index}]: {err}") from err
            return self._skip(index, err)


def record_regions(record: Mapping[str, Any], n_tokens: int) -> list:
    """The record's ``regions`` (pixel boxes of the original image), one per ``<region>``.

    ``n_tokens`` is the number of ``<region>`` tokens in the human turns (``-1`` when one
    lies in an answer): it must equal the number of boxes, else ``region_count_mismatch``.
    """
    boxes = record.get("regions") or []
    if not isinstance(boxes, list):
        raise SampleError("region_malformed", f"regions must be a list, got {type(boxes).__name__}")
    if n_tokens < 0:
        raise SampleError("region_count_mismatch", f"{REGION_TOKEN} in an answer")
    if len(boxes) != n_tokens:
        raise SampleError(
            "region_count_mismatch", f"{n_tokens} {REGION_TOKEN} in the prompts, {len(boxes)} boxes"
        )
    return boxes


def _checked_box(box: Any, width: int, height: int) -> list[float]:
    """``[x0, y0, x1, y1]`` inside the ``width x height`` image, else ``region_malformed``."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise SampleError("region_malformed", f"a region is [x0, y0, x1, y1], got {box!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise SampleError("region_malformed", f"region {box!r}: {err}") from err
    inside = 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    if not (all(math.isfinite(v) for v in (x0, y0, x1, y1)) and inside):
        raise SampleError("region_malformed", f"region {box!r} in a {width}x{height} image")
    return [x0, y0, x1, y1]


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image file's header."""
    with media_errors(path, "image"), Image.open(path) as img:
        return img.size


def collate_cached_features(
    samples: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{modality: (features, hit)}`` of the samples whose encoder features the dataset read
    from the feature cache (`RecordEncoder.read_cached_features`).

    ``features`` stacks the cached items, ``hit`` is one bool per item of the modality in
    sample order (cached or decoded): ``media[modality]`` holds the decoded ones (``~hit``).
    """
    out = {}
    names = sorted({m for s in samples for m in s.get("cached_features", {})})
    for name in names:
        have = [s for s in samples if name in s["media"] or name in s.get("cached_features", {})]
        hit = torch.tensor([name in s.get("cached_features", {}) for s in have])
        features = [
            s["cached_features"][name] for s in have if name in s.get("cached_features", {})
        ]
        out[name] = (torch.stack(features), hit)
    return out


def collate_regions(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The region entries of a batch (none when no sample has regions).

    ``region_boxes`` holds the ``(n_i, 4)`` boxes of each sample with regions (batch order),
    ``region_owner`` their batch index, ``region_images`` the index of their image in
    ``media["image"]`` and ``region_in_prompt`` (one bool per box, all boxes in order)
    which boxes lie in the first prompt (``prompt_ids``, what generation sees).
    """
    owners = [i for i, s in enumerate(samples) if "regions" in s]
    if not owners:
        return {}
    with_image = [i for i, s in enumerate(samples) if "image" in s["media"]]
    boxes = [samples[i]["regions"] for i in owners]
    prompt = [
        torch.arange(len(samples[i]["regions"])) < samples[i]["prompt_regions"] for i in owners
    ]
    return {
        "region_boxes": boxes,
        "region_owner": owners,
        "region_images": [with_image.index(i) for i in owners],
        "region_in_prompt": torch.cat(prompt),
    }


def collate_segments(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pixel-grounding entries of a batch (none when no sample has masks).

    ``seg_pixels`` ``(M, 3, S, S)`` stacks SAM's image of the ``M`` samples with masks (batch
    order), ``seg_masks`` their ``(n_i, S, S)`` bool masks, ``seg_counts`` the ``n_i``,
    ``seg_sizes`` their original ``(height, width)``, ``seg_targets`` the segmentations as
    the records give them (scored in original pixels) and ``seg_owner`` their batch index.
    """
    owners = [i for i, s in enumerate(samples) if "segment" in s]
    if not owners:
        return {}
    segs = [samples[i]["segment"] for i in owners]
    return {
        "seg_pixels": torch.stack([s["pixels"] for s in segs]),
        "seg_masks": [s["masks"] for s in segs],
        "seg_counts": [int(s["masks"].shape[0]) for s in segs],
        "seg_sizes": [tuple(s["size"]) for s in segs],
        "seg_targets": [s["targets"] for s in segs],
        "seg_owner": owners,
    }


class GroundingCollator:
    """Batch samples: right-padded training ids, left-padded prompts, media stacked per modality.

    Skipped samples (``{"skipped": reason}``) are dropped and reported in ``batch["skipped"]``
    (their reasons) and ``batch["skipped_info"]`` (dataset, file, reason, detail of each), so
    the training module and callbacks can count them.

    With ``pack_length`` the training ids are packed instead (`groundinggpt.data.packing`):
    the samples lie end to end in as few even rows of at most ``pack_length`` tokens as fit,
    ``batch["position_ids"]`` restart at every sample, ``batch["sequence_ids"]`` give each
    position's sample (``-1`` for padding) and every per-sample entry (media, ids, tasks,
    prompts) follows the packed order, so the media fill their placeholders row by row.

    Args:
        pad_token_id: id used to pad ``input_ids`` and ``prompt_ids``.
        pack_length: longest packed row in tokens; ``None`` pads each sample to the longest.

    Example:
        >>> collate = GroundingCollator(tok.pad_token_id)
        >>> batch = collate([ds[0], ds[1]])
        >>> batch["input_ids"].shape, batch["skipped"]
        >>> packed = GroundingCollator(tok.pad_token_id, pack_length=512)([ds[0], ds[1]])
        >>> packed["input_ids"].shape  # (1, len0 + len1) when both fit one row
    """

    def __init__(self, pad_token_id: int, pack_length: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        if pack_length is not None and pack_length < 1:
            raise ValueError(f"pack_length must be a positive number of tokens, got {pack_length}")
        self.pack_length = pack_length

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        info = [dict(s) for s in samples if "skipped" in s]
        samples = [s for s in samples if "skipped" not in s]
        batch: dict[str, Any] = {
            "skipped": [s["skipped"] for s in info],
            "skipped_info": info,
            "size": len(samples),
        }
        if not samples:
            return batch
        if self.pack_length is None:
            ids = [s["input_ids"] for s in samples]
            batch["input_ids"] = pad_sequences(ids, self.pad_token_id)
            batch["attention_mask"] = pad_sequences([[1] * len(x) for x in ids], 0)
            batch["labels"] = pad_sequences([s["labels"] for s in samples], IGNORE_INDEX)
        else:
            rows = pack_rows([len(s["input_ids"]) for s in samples], self.pack_length)
            samples = [samples[i] for row in rows for i in row]
            batch.update(self._pack(samples, [len(row) for row in rows]))
        prompts = [s["prompt_ids"] for s in samples]
        batch["prompt_ids"] = pad_sequences(prompts, self.pad_token_id, left=True)
        batch["prompt_mask"] = pad_sequences([[1] * len(x) for x in prompts], 0, left=True)
        names = sorted({m for s in samples for m in s["media"]})
        batch["media"] = {
            m: torch.stack([s["media"][m] for s in samples if m in s["media"]]) for m in names
        }
        cached = collate_cached_features(samples)
        if cached:
            batch["cached_features"] = cached
        for key in ("id", "task", "dataset", "reference", "prompt", "media_paths"):
            batch[key] = [s[key] for s in samples]
        batch.update(collate_segments(samples))
        batch.update(collate_regions(samples))
        batch["truncated"] = [bool(s.get("truncated", False)) for s in samples]
        return batch

    def _pack(self, samples: Sequence[Mapping[str, Any]], row_sizes: list[int]) -> dict[str, Any]:
        """Padded ``(rows, T)`` tensors of ``samples`` (packed order) laid ``row_sizes`` per row."""
        ids, labels, positions, sequences = [], [], [], []
        start = 0
        for size in row_sizes:
            row = samples[start : start + size]
            ids.append([t for s in row for t in s["input_ids"]])
            # No label on a sample's first position: nothing predicts across a boundary.
            labels.append([t for s in row for t in [IGNORE_INDEX, *s["labels"][1:]]])
            sequences.append([start + j for j, s in enumerate(row) for _ in s["input_ids"]])
            positions.append([len(s["input_ids"]) for s in row])
            start += size
        width = max(len(r) for r in ids)
        return {
            "input_ids": pad_sequences(ids, self.pad_token_id),
            "attention_mask": pad_sequences([[1] * len(r) for r in ids], 0),
            "labels": pad_sequences(labels, IGNORE_INDEX),
            "position_ids": torch.stack([packed_positions(n, width) for n in positions]),
            "sequence_ids": pad_sequences(sequences, -1),
        }
