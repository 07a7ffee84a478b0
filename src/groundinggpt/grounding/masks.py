"""Mask geometry and mask losses of pixel grounding: COCO segmentations, the SAM frame, BCE/Dice.

Three groups, all pure functions:

* **COCO segmentations.** `decode_mask` turns polygons, uncompressed RLE and compressed RLE
  into a ``(H, W)`` bool array (via ``pycocotools.mask``); `encode_mask` is its inverse
  (compressed RLE with a ``str`` ``counts``, so it goes into JSON as is).
* **The SAM frame.** SAM's image processor (``transformers.SamImageProcessor``) resizes an
  image so that its longest side is ``S`` (1024 for SAM) and pads it bottom-right to
  ``S x S``. `sam_resized_size` is the size of the resized image inside that frame,
  `mask_to_sam_frame` carries a mask into the frame (e.g. a target for a loss on SAM's output),
  `mask_logits_to_original` carries mask logits from the frame back to the original image
  exactly as ``SamImageProcessor.post_process_masks`` does.
* **Losses on mask logits** as LISA and GLaMM train their mask decoder: `mask_bce_loss` and
  `dice_loss`.

This module is on the bottom floor of the house: it imports nothing else of the project.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

# --- COCO segmentations --------------------------------------------------------------------


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation as a ``(height, width)`` bool array.

    Accepts the three COCO forms: polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists,
    at least three points each, merged into one mask; an empty list is an empty mask),
    uncompressed RLE (``{"size": [h, w], "counts": [int, ...]}``, column-major runs starting
    with background) and compressed RLE (``counts`` a ``str`` or ``bytes``). An RLE's
    ``size`` must be ``[height, width]``.

    Raises:
        ValueError: for anything else, a polygon with fewer than three points, an odd
            coordinate count or non-finite coordinates, or runs that do not cover exactly
            ``height * width`` pixels.

    Example:
        >>> decode_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 4, 5).astype(int)
        array([[0, 0, 0, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 1, 1, 1, 0],
               [0, 0, 0, 0, 0]])
    """
    height, width = _check_size(height, width)
    if isinstance(segmentation, Mapping):
        rle = _rle_object(segmentation, height, width)
    elif isinstance(segmentation, (list, tuple)):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(_polygons(segmentation), height, width))
    else:
        raise ValueError(
            "a segmentation must be a list of polygons or an RLE dict with 'size' and "
            f"'counts', got {type(segmentation).__name__}"
        )
    return mask_utils.decode(rle).astype(bool)


def encode_mask(mask: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """A ``(H, W)`` mask as compressed COCO RLE ``{"size": [h, w], "counts": str}``.

    Nonzero pixels are foreground. The result is JSON-serialisable and `decode_mask` inverts it.

    Example:
        >>> rle = encode_mask(np.eye(3, dtype=bool))
        >>> rle["size"], decode_mask(rle, 3, 3).sum()
        ([3, 3], np.int64(3))
    """
    array = _as_numpy_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(array.shape[0]), int(array.shape[1])], "counts": rle["counts"].decode()}


def _check_size(height: int, width: int) -> tuple[int, int]:
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ValueError(f"mask size must be two positive integers, got ({height}, {width})")
    return int(height), int(width)


def _as_numpy_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {tuple(array.shape)}")
    return array != 0


def _polygons(segmentation: Sequence) -> list[list[float]]:
    polygons = []
    for i, polygon in enumerate(segmentation):
        try:
            coords = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"polygon {i} is not a flat list of numbers: {polygon!r}") from None
        if coords.ndim != 1 or coords.size % 2 or coords.size < 6:
            raise ValueError(
                f"polygon {i} must be a flat [x0, y0, x1, y1, ...] list of at least 3 points, "
                f"got {coords.size} numbers in shape {coords.shape}"
            )
        if not np.isfinite(coords).all():
            raise ValueError(f"polygon {i} has non-finite coordinates")
        polygons.append(coords.tolist())
    return polygons


def _rle_object(segmentation: Mapping, height: int, width: int) -> dict[str, Any]:
    """A validated RLE in pycocotools' compressed form (``counts`` bytes)."""
    if "size" not in segmentation or "counts" not in segmentation:
        raise ValueError(f"an RLE needs 'size' and 'counts', got keys {sorted(segmentation)}")
    size = segmentation["size"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        raise ValueError(f"RLE size {size!r} does not match the image ({height}, {width})")
    counts = segmentation["counts"]
    if isinstance(counts, str):
        if not counts.isascii():
            raise ValueError("compressed RLE counts must be ASCII")
        counts = counts.encode("ascii")
    if isinstance(counts, bytes):
        runs = _compressed_counts(counts)
    elif isinstance(counts, (list, tuple)) and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts
    ):
        runs = [int(c) for c in counts]
    else:
        raise ValueError("RLE counts must be a str, bytes or a list of integers")
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        raise ValueError(
            f"RLE runs must be non-negative and cover {height * width} pixels, "
            f"got {len(runs)} runs summing to {sum(runs)}"
        )
    if isinstance(counts, bytes):
        return {"size": [height, width], "counts": counts}
    return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)


def _compressed_counts(counts: bytes) -> list[int]:
    """The runs of COCO's compressed RLE string.

    Each run is written in 5-bit groups, low bits first, one character (``48 + group``) per
    group; bit 5 (0x20) says another group follows, bit 4 of the last group is the sign. From
    the third run on, the string holds the difference to the run two places earlier.
    """
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("compressed RLE counts end in the middle of a number")
            group = counts[pos] - 48
            if not 0 <= group < 64:
                raise ValueError(f"compressed RLE counts hold an invalid character {counts[pos]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


# --- the SAM frame ---------------------------------------------------------------------------


def sam_resized_size(height: int, width: int, size: int = 1024) -> tuple[int, int]:
    """The ``(h', w')`` an image of ``(height, width)`` gets in a SAM frame of side ``size``.

    The longest side becomes ``size``; each side is ``int(side * size / longest + 0.5)``,
    the float arithmetic of ``SamImageProcessor._get_preprocess_shape`` (transformers 5).

    Example:
        >>> sam_resized_size(37, 100, 64), sam_resized_size(480, 640)
        ((24, 64), (768, 1024))
    """
    height, width = _check_size(height, width)
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def mask_to_sam_frame(mask: np.ndarray | torch.Tensor, size: int = 1024) -> torch.Tensor:
    """A ``(H, W)`` mask in the SAM frame: a float ``(size, size)`` tensor of 0.0 / 1.0.

    The mask (nonzero is foreground; a float mask is thresholded at 0.5 first) is resized to
    `sam_resized_size` by bilinear interpolation (``align_corners=False``, antialiased when
    shrinking, so that a pixel of the frame is the area-weighted vote of the pixels it covers)
    and thresholded at ``>= 0.5``, then padded with background on the bottom and right. The
    result lies on the device of ``mask`` (CPU for numpy input).

    Example:
        >>> frame = mask_to_sam_frame(np.ones((37, 100), dtype=bool), 64)
        >>> frame.shape, int(frame.sum()), frame[23, 63].item(), frame[24, 0].item()
        (torch.Size([64, 64]), 1536, 1.0, 0.0)
    """
    source = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
    if source.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {tuple(source.shape)}")
    binary = (source > 0.5) if source.is_floating_point() else (source != 0)
    new_h, new_w = sam_resized_size(*binary.shape, size)
    shrinking = new_h < binary.shape[0] or new_w < binary.shape[1]
    resized = F.interpolate(
        binary[None, None].float(),
        size=(new_h, new_w),
        mode="bilinear",
        align_corners=False,
        antialias=shrinking,
    )[0, 0]  # (h', w')
    frame = torch.zeros(size, size, dtype=torch.float32, device=binary.device)
    frame[:new_h, :new_w] = (resized >= 0.5).float()
    return frame


def mask_logits_to_original(
    logits: torch.Tensor, original_size: tuple[int, int], size: int = 1024
) -> torch.Tensor:
    """Mask logits ``(N, h, w)`` on the SAM frame (any resolution) -> ``(N, H, W)`` logits.

    Bilinear (``align_corners=False``) to ``size x size``, crop the unpadded top-left
    `sam_resized_size`, bilinear to ``original_size``: the steps of
    ``SamImageProcessor.post_process_masks`` (without its binarisation), so SAM's 256 x 256
    low-resolution masks or full frames both work. Threshold the result at 0 for masks.

    Example:
        >>> mask_logits_to_original(torch.zeros(2, 256, 256), (480, 640)).shape
        torch.Size([2, 480, 640])
    """
    if logits.ndim != 3:
        raise ValueError(f"mask logits must be (N, h, w), got shape {tuple(logits.shape)}")
    height, width = _check_size(*original_size)
    if logits.shape[0] == 0:
        return logits.new_zeros(0, height, width)
    new_h, new_w = sam_resized_size(height, width, size)
    frame = F.interpolate(logits[:, None], (size, size), mode="bilinear", align_corners=False)
    valid = frame[..., :new_h, :new_w]  # (N, 1, h', w')
    return F.interpolate(valid, (height, width), mode="bilinear", align_corners=False)[:, 0]


def sam_valid_region(height: int, width: int, size: int = 1024) -> torch.Tensor:
    """The ``(size, size)`` bool map of the SAM frame that holds the image (not padding).

    Pass it as ``valid`` to `mask_bce_loss` / `dice_loss` for losses in the SAM frame.

    Example:
        >>> int(sam_valid_region(37, 100, 64).sum())  # 24 * 64
        1536
    """
    new_h, new_w = sam_resized_size(height, width, size)
    region = torch.zeros(size, size, dtype=torch.bool)
    region[:new_h, :new_w] = True
    return region


# --- losses ------------------------------------------------------------------------------------


def mask_bce_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Sigmoid binary cross-entropy of mask logits: the mean over pixels, then over masks.

    As ``compute_sigmoid_cross_entropy`` of GLaMM (mbzuai-oryx/groundingLMM,
    ``model/GLaMM.py``; LISA's ``sigmoid_ce_loss``): for mask ``i`` with ``P`` pixels,
    ``l_i = (1/P) * sum_p BCE(sigmoid(x_ip), y_ip)``, and the loss is ``(1/N) * sum_i l_i``
    (GLaMM divides by ``N + 1e-8``; the 1e-8 is left out). With ``valid`` (``(N, H, W)`` or
    ``(H, W)`` bool), only valid pixels count: ``P`` is the number of valid pixels of the
    mask (a mask without any contributes 0). Computed in float32 at least.

    Args:
        logits: ``(N, H, W)`` mask logits.
        targets: ``(N, H, W)`` 0/1 targets (bool or float).
        valid: optional bool map of the pixels that count, e.g. `sam_valid_region`.

    Returns:
        A scalar; ``N == 0`` gives a 0 that still has a (zero) gradient w.r.t. ``logits``.

    Example:
        >>> round(mask_bce_loss(torch.zeros(1, 2, 2), torch.ones(1, 2, 2)).item(), 4)  # ln 2
        0.6931
    """
    x, y, weight = _loss_inputs(logits, targets, valid)
    if x.shape[0] == 0:
        return logits.sum() * 0.0
    pixel = F.binary_cross_entropy_with_logits(x, y, reduction="none")  # (N, H, W)
    if weight is None:
        return pixel.flatten(1).mean(1).mean()
    per_mask = (pixel * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp(min=1.0)
    return per_mask.mean()


def dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    scale: float = 1000.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Dice loss of mask logits on sigmoid probabilities, the mean over masks.

    As ``calculate_dice_loss`` of GLaMM (mbzuai-oryx/groundingLMM, ``model/GLaMM.py``; LISA's
    ``dice_loss``): with ``p = sigmoid(x)`` and target ``t`` of mask ``i``,
    ``l_i = 1 - (2 * sum(p * t) / scale + eps) / ((sum(p) + sum(t)) / scale + eps)``, and the
    loss is ``(1/N) * sum_i l_i``. The scale divides the sums before ``eps`` is added (LISA's
    trick, keeping bf16 sums small), so ``eps`` weighs ``scale`` times more than it would on
    raw sums: a mask whose prediction and target are both empty scores 0. With ``valid``,
    pixels outside it are left out of all sums. Computed in float32 at least.

    Returns:
        A scalar; ``N == 0`` gives a 0 that still has a (zero) gradient w.r.t. ``logits``.

    Example:
        >>> x = torch.full((1, 2, 2), 20.0)
        >>> round(dice_loss(x, torch.ones(1, 2, 2)).item(), 6)  # a perfect mask
        0.0
    """
    x, y, weight = _loss_inputs(logits, targets, valid)
    if x.shape[0] == 0:
        return logits.sum() * 0.0
    p = x.sigmoid()
    if weight is not None:
        p, y = p * weight, y * weight
    p, y = p.flatten(1), y.flatten(1)  # (N, H*W)
    numerator = 2 * (p / scale * y).sum(-1)
    denominator = (p / scale).sum(-1) + (y / scale).sum(-1)
    return (1 - (numerator + eps) / (denominator + eps)).mean()


def _loss_inputs(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits and targets as float (at least float32) ``(N, H, W)``, valid as a 0/1 weight."""
    if logits.ndim != 3 or targets.shape != logits.shape:
        raise ValueError(
            f"logits and targets must both be (N, H, W), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    dtype = torch.promote_types(logits.dtype, torch.float32)
    x, y = logits.to(dtype), targets.to(device=logits.device, dtype=dtype)
    if valid is None:
        return x, y, None
    if valid.shape not in (logits.shape, logits.shape[1:]):
        raise ValueError(
            f"valid must be (N, H, W) or (H, W) for logits {tuple(logits.shape)}, "
            f"got {tuple(valid.shape)}"
        )
    weight = (valid.to(device=logits.device) != 0).to(dtype).expand_as(x)
    return x, y, weight
