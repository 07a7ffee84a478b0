"""Tests of the mask building blocks: COCO decode/encode, the SAM frame, BCE and Dice losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from groundinggpt.grounding.masks import (
    _compressed_counts,
    decode_mask,
    dice_loss,
    encode_mask,
    mask_bce_loss,
    mask_logits_to_original,
    mask_to_sam_frame,
    sam_resized_size,
    sam_valid_region,
)

# A hand-drawn 4 x 5 mask: a 2 x 3 block at rows 1-2, columns 1-3.
HAND = np.array(
    [
        [0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ],
    dtype=bool,
)
# Column-major runs, starting with background: column 0 (4 zeros) + row 0 of column 1 -> 5
# zeros; then 2 ones, 2 zeros (row 3 of col 1, row 0 of col 2), 2 ones, 2 zeros, 2 ones, and
# row 3 of column 3 + column 4 -> 5 zeros. 5 + 2 + 2 + 2 + 2 + 2 + 5 = 20 = 4 * 5.
HAND_RUNS = [5, 2, 2, 2, 2, 2, 5]


# --- COCO decode / encode ---------------------------------------------------------------------


def test_decode_polygon_of_the_hand_drawn_mask() -> None:
    # the rectangle x in [1, 4], y in [1, 3] covers pixel columns 1-3 and rows 1-2
    assert np.array_equal(decode_mask([[1, 1, 4, 1, 4, 3, 1, 3]], 4, 5), HAND)
    # two polygons are merged (a union): the block plus the single pixel (0, 0)
    two = decode_mask([[1, 1, 4, 1, 4, 3, 1, 3], [0, 0, 1, 0, 1, 1, 0, 1]], 4, 5)
    expected = HAND.copy()
    expected[0, 0] = True
    assert np.array_equal(two, expected)
    assert decode_mask([], 4, 5).shape == (4, 5) and not decode_mask([], 4, 5).any()


def test_decode_uncompressed_and_compressed_rle_of_the_hand_drawn_mask() -> None:
    out = decode_mask({"size": [4, 5], "counts": HAND_RUNS}, 4, 5)
    assert out.dtype == bool and np.array_equal(out, HAND)
    rle = encode_mask(HAND)
    # 5, 2, 2 as digits ('0' + run); then each run minus the run two before: 2-2=0, 2-2=0,
    # 2-2=0, 5-2=3
    assert rle == {"size": [4, 5], "counts": "5220003"}
    assert _compressed_counts(b"5220003") == HAND_RUNS
    assert np.array_equal(decode_mask(rle, 4, 5), HAND)
    assert np.array_equal(decode_mask({"size": [4, 5], "counts": b"5220003"}, 4, 5), HAND)


@pytest.mark.parametrize("shape", [(1, 1), (4, 5), (37, 100), (100, 37), (64, 64)])
def test_encode_decode_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for mask in (rng.random(shape) < 0.3, np.zeros(shape, bool), np.ones(shape, bool)):
        rle = encode_mask(torch.from_numpy(mask))
        assert isinstance(rle["counts"], str) and rle["size"] == list(shape)
        assert np.array_equal(decode_mask(rle, *shape), mask)
        runs = _compressed_counts(rle["counts"].encode())
        assert sum(runs) == mask.size


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ([[0, 0, 1, 1]], "at least 3 points"),
        ([[0, 0, 1, 1, 2]], "at least 3 points"),
        ([[0, 0, 1, float("nan"), 2, 2]], "non-finite"),
        ([["a", "b", "c", "d", "e", "f"]], "flat list of numbers"),
        ({"counts": [20]}, "needs 'size' and 'counts'"),
        ({"size": [5, 4], "counts": [20]}, "does not match"),
        ({"size": [4, 5], "counts": [5, 2, 2]}, "cover 20 pixels"),
        ({"size": [4, 5], "counts": [25, -5]}, "non-negative"),
        ({"size": [4, 5], "counts": "522000"}, "cover 20 pixels"),
        ({"size": [4, 5], "counts": "5P"}, "middle of a number"),
        ({"size": [4, 5], "counts": "52 0003"}, "invalid character"),
        ({"size": [4, 5], "counts": "522000é"}, "ASCII"),
        ({"size": [4, 5], "counts": 20}, "str, bytes or a list"),
        ("not a mask", "list of polygons or an RLE"),
    ],
)
def test_malformed_segmentations_raise(segmentation, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_mask(segmentation, 4, 5)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        decode_mask([], 0, 5)
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 2, 2)))


# --- the SAM frame ----------------------------------------------------------------------------


def test_sam_resized_size_by_hand_and_like_the_sam_processor() -> None:
    # 37 * 64 / 100 = 23.68 -> int(24.18) = 24; 5 * 4 / 8 = 2.5 -> int(3.0) = 3 (half up,
    # where Python's round(2.5) would give 2)
    assert sam_resized_size(37, 100, 64) == (24, 64)
    assert sam_resized_size(100, 37, 64) == (64, 24)
    assert sam_resized_size(5, 8, 4) == (3, 4)
    assert sam_resized_size(480, 640) == (768, 1024)
    transformers = pytest.importorskip("transformers")
    processor = transformers.SamImageProcessor()
    rng = np.random.default_rng(0)
    for h, w in [(37, 100), (100, 37), (5, 8), *rng.integers(1, 3000, (50, 2)).tolist()]:
        for size in (64, 1024):
            assert sam_resized_size(h, w, size) == processor._get_preprocess_shape((h, w), size)


def test_mask_to_sam_frame_resizes_and_pads_bottom_right() -> None:
    frame = mask_to_sam_frame(np.ones((37, 100), dtype=bool), 64)
    assert frame.dtype == torch.float32 and frame.shape == (64, 64)
    assert frame[:24].eq(1).all() and frame[24:].eq(0).all()  # h' = 24 rows, then padding
    tall = mask_to_sam_frame(torch.ones(100, 37), 64)
    assert tall[:, :24].eq(1).all() and tall[:, 24:].eq(0).all()
    # a float mask is thresholded at 0.5 first: 0.4 everywhere is empty
    assert mask_to_sam_frame(torch.full((10, 10), 0.4), 20).sum() == 0
    region = sam_valid_region(37, 100, 64)
    assert region.sum() == 24 * 64 and region[:24].all()


def _blobs(h: int, w: int, seed: int) -> np.ndarray:
    """Discs and a rectangle: shapes no thinner than a few pixels at these sizes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(3):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.15, 0.35) * min(h, w)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    mask[int(h * 0.1) : int(h * 0.4), int(w * 0.5) : int(w * 0.9)] = True
    return mask


@pytest.mark.parametrize("shape", [(37, 100), (100, 37), (64, 64)])
@pytest.mark.parametrize("size", [64, 1024])
def test_round_trip_through_the_sam_frame_errs_only_at_the_boundary(shape, size) -> None:
    """Original pixels -> SAM frame -> logits back to the original: every pixel that changed
    lies within 1 px (8-neighbourhood) of a pixel of the other class in the true mask."""
    h, w = shape
    ring = np.ones((3, 3), dtype=bool)
    changed = 0
    for seed in range(4):
        mask = _blobs(h, w, seed)
        frame = mask_to_sam_frame(mask, size)
        back = mask_logits_to_original((frame - 0.5)[None], (h, w), size)[0] > 0
        diff = back.numpy() != mask
        near = ndimage.binary_dilation(mask, ring) & ~ndimage.binary_erosion(
            mask, ring, border_value=1
        )
        assert not (diff & ~near).any(), (seed, np.argwhere(diff & ~near)[:5])
        changed += diff.sum()
    if size == 64 and shape != (64, 64):  # really resampled: the check had something to judge
        assert changed > 0


def test_mask_logits_to_original_matches_sam_post_process_masks() -> None:
    transformers = pytest.importorskip("transformers")
    processor = transformers.SamImageProcessor()
    torch.manual_seed(0)
    for (h, w), size, res in [((37, 100), 64, 16), ((100, 37), 64, 64), ((480, 640), 1024, 256)]:
        logits = torch.randn(3, res, res)
        expected = processor.post_process_masks(
            [logits[None].clone()],
            [(h, w)],
            [sam_resized_size(h, w, size)],
            binarize=False,
            pad_size={"height": size, "width": size},
        )[0][0]
        ours = mask_logits_to_original(logits, (h, w), size)
        assert ours.shape == (3, h, w)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert mask_logits_to_original(torch.zeros(0, 16, 16), (5, 7), 64).shape == (0, 5, 7)


# --- losses -------------------------------------------------------------------------------------

LN3 = math.log(3.0)


def test_bce_by_hand() -> None:
    # mask 0: logits [[0, ln 3], [-ln 3, 0]] against [[1, 1], [0, 0]]; sigmoid(ln 3) = 3/4.
    #   pixel losses: ln 2, -ln(3/4) = ln(4/3), -ln(1 - 1/4) = ln(4/3), ln 2
    #   mean = (2 ln 2 + 2 ln(4/3)) / 4 = ln(8/3) / 2
    # mask 1: ln 3 everywhere against ones: ln(4/3) per pixel, mean ln(4/3)
    logits = torch.tensor(
        [[[0.0, LN3], [-LN3, 0.0]], [[LN3, LN3], [LN3, LN3]]], dtype=torch.float64
    )
    targets = torch.tensor([[[1, 1], [0, 0]], [[1, 1], [1, 1]]], dtype=torch.bool)
    loss0, loss1 = math.log(8 / 3) / 2, math.log(4 / 3)
    assert mask_bce_loss(logits, targets).item() == pytest.approx((loss0 + loss1) / 2)
    # valid (H, W) = top-left pixel only: mask 0 -> ln 2, mask 1 -> ln(4/3)
    valid = torch.tensor([[True, False], [False, False]])
    expected = (math.log(2) + math.log(4 / 3)) / 2
    assert mask_bce_loss(logits, targets, valid).item() == pytest.approx(expected)
    # valid (N, H, W): mask 0 has no valid pixel (contributes 0), mask 1 all of them
    per_mask = torch.stack(
        [torch.zeros(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)]
    )
    assert mask_bce_loss(logits, targets, per_mask).item() == pytest.approx(loss1 / 2)


def test_dice_by_hand() -> None:
    # 3 x 3: probabilities p (logits ln 3, 0, -ln 3 -> 3/4, 1/2, 1/4) against target t
    p = torch.tensor([[0.75, 0.75, 0.25], [0.5, 0.5, 0.25], [0.5, 0.25, 0.25]], dtype=torch.float64)
    t = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    logits = torch.logit(p)[None]
    # sum(p t) = 0.75 + 0.75 + 0.5 = 2; sum p = 4; sum t = 3
    # scale 1000: 1 - (2 * 2 / 1000 + 1e-6) / ((4 + 3) / 1000 + 1e-6) = 1 - 0.004001 / 0.007001
    assert dice_loss(logits, t[None]).item() == pytest.approx(1 - 0.004001 / 0.007001, abs=1e-12)
    # without the scale the eps weighs 1000x less: 1 - 4.000001 / 7.000001
    expected = 1 - 4.000001 / 7.000001
    assert dice_loss(logits, t[None], scale=1.0).item() == pytest.approx(expected, abs=1e-12)
    # valid: only the first row counts: sum(p t) = 1.5, sum p = 1.75, sum t = 2
    valid = torch.tensor([[1, 1, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    expected = 1 - (3 / 1000 + 1e-6) / (3.75 / 1000 + 1e-6)
    assert dice_loss(logits, t[None], valid).item() == pytest.approx(expected, abs=1e-12)
    # two masks: the mean; an empty prediction of an empty target costs (almost) nothing
    empty = torch.full((1, 3, 3), -40.0, dtype=torch.float64)
    both = dice_loss(torch.cat([logits, empty]), torch.stack([t, torch.zeros(3, 3)]))
    assert both.item() == pytest.approx((1 - 0.004001 / 0.007001) / 2, abs=1e-9)


def test_zero_masks_give_a_differentiable_zero() -> None:
    logits = torch.zeros(0, 4, 4, requires_grad=True)
    targets = torch.zeros(0, 4, 4)
    for loss_fn in (mask_bce_loss, dice_loss):
        loss = loss_fn(logits, targets)
        assert loss.item() == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad.shape == (0, 4, 4)


def test_losses_have_gradients_and_check_shapes() -> None:
    logits = torch.zeros(2, 3, 3, requires_grad=True)
    targets = torch.ones(2, 3, 3)
    (mask_bce_loss(logits, targets) + dice_loss(logits, targets)).backward()
    assert logits.grad is not None and (logits.grad < 0).all()  # raise every logit
    bf16 = mask_bce_loss(logits.detach().bfloat16(), targets)
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="both be"):
        mask_bce_loss(logits, targets[:, :2])
    with pytest.raises(ValueError, match="valid must be"):
        dice_loss(logits, targets, torch.ones(2, 2, dtype=torch.bool))
