"""Pixel-grounding inputs of a record: SAM's view of its image and one target mask per ``[SEG]``.

A record that grounds answers in masks carries ``"masks"``: a list of COCO segmentations
(RLE, compressed RLE or polygons, in pixels of the original image), the first for the first
``[SEG]`` of its answers, and so on. `SegmentationProcessor` turns the record's image and
those masks into SAM's input frame: the image resized so that its longest side is ``size``
and padded bottom-right (SAM's own processor, ``transformers.SamImageProcessor``), each mask
the same way (`groundinggpt.grounding.masks`).

Example:
    >>> proc = SegmentationProcessor(size=64)
    >>> seg = proc("images/res_train_00000.png", record["masks"])
    >>> seg["pixels"].shape, seg["masks"].shape, seg["size"]
    (torch.Size([3, 64, 64]), torch.Size([1, 64, 64]), (71, 104))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from groundinggpt.data.media import media_errors, open_rgb
from groundinggpt.data.records import SampleError
from groundinggpt.grounding.masks import decode_mask, mask_to_sam_frame


class SegmentationProcessor:
    """Image file + its masks -> ``{"pixels", "masks", "size"}`` in SAM's input frame.

    Args:
        size: SAM's input side (1024 for SAM ViT-H; the tiny decoder's 64).
        max_pixels: images declaring more pixels are skipped (``image_too_large``).
        max_aspect_ratio: images with a longer side ratio are skipped.
        allow_empty: keep a mask covering no pixel (evaluation: an AVSBench frame without a
            sounding object is a real test case); training skips it as ``mask_empty``.
    """

    def __init__(
        self,
        size: int = 1024,
        max_pixels: int | None = 40_000_000,
        max_aspect_ratio: float | None = 20.0,
        allow_empty: bool = False,
    ) -> None:
        from transformers import SamImageProcessor

        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = int(size)
        self.max_pixels, self.max_aspect_ratio = max_pixels, max_aspect_ratio
        self.allow_empty = bool(allow_empty)
        self.processor = SamImageProcessor(
            size={"longest_edge": self.size}, pad_size={"height": self.size, "width": self.size}
        )

    def pixels(self, path: str | Path) -> tuple[torch.Tensor, tuple[int, int]]:
        """SAM-normalised ``(3, size, size)`` pixels and the original ``(height, width)``."""
        img = open_rgb(path, self.max_pixels, self.max_aspect_ratio)
        with media_errors(path, "image"):
            x = self.processor(images=img, return_tensors="pt")["pixel_values"][0]
        return x, (img.height, img.width)

    def __call__(self, path: str | Path, segmentations: Sequence[Any]) -> dict[str, Any]:
        pixels, (height, width) = self.pixels(path)
        masks = []
        for k, seg in enumerate(segmentations):
            try:
                mask = decode_mask(seg, height, width)
            except ValueError as err:
                raise SampleError("mask_malformed", f"mask {k}: {err}") from err
            if not mask.any() and not self.allow_empty:
                raise SampleError("mask_empty", f"mask {k} covers no pixel")
            masks.append(mask_to_sam_frame(mask, self.size) > 0.5)
        stacked = torch.stack(masks) if masks else torch.zeros(0, self.size, self.size, dtype=bool)
        # targets: the segmentations as given, decoded in original pixels when scored
        return {
            "pixels": pixels,
            "masks": stacked,
            "size": (height, width),
            "targets": list(segmentations),
        }


def count_seg_tokens(ids: Sequence[int], labels: Sequence[int], seg_token_id: int) -> int:
    """``[SEG]`` tokens in the answers (trained positions) of one encoded conversation."""
    return sum(1 for t, lab in zip(ids, labels, strict=True) if t == seg_token_id and lab == t)


def record_masks(record: dict, n_seg: int, n_seg_total: int) -> list:
    """The masks of the first ``n_seg`` ``[SEG]`` tokens (after truncation) of ``record``.

    ``n_seg_total`` is the count in the whole conversation: it must equal the number of masks
    (else the record is skipped as ``mask_count_mismatch``).
    """
    masks = record.get("masks") or []
    if not isinstance(masks, list):
        raise SampleError("mask_malformed", f"masks must be a list, got {type(masks).__name__}")
    if len(masks) != n_seg_total:
        raise SampleError(
            "mask_count_mismatch", f"{n_seg_total} [SEG] in the answers, {len(masks)} masks"
        )
    return masks[:n_seg]


def record_first_mask(record: dict) -> Any:
    """The first mask of a record in its original pixels, or None without a decodable one.

    The size comes from an RLE's own ``size`` or the record's ``meta.size`` (``[w, h]``).
    """
    masks = record.get("masks") or []
    if not masks:
        return None
    seg = masks[0]
    size = seg.get("size") if isinstance(seg, dict) else None
    if size is None:
        w, h = (record.get("meta") or {}).get("size", (None, None))
        size = (h, w)
    if None in size:
        return None
    try:
        return decode_mask(seg, int(size[0]), int(size[1]))
    except ValueError:
        return None  # a bad record is counted when training reads it


__all__ = ["SegmentationProcessor", "count_seg_tokens", "record_first_mask", "record_masks"]
