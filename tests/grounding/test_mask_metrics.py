"""Tests of the mask metrics: hand-computed cIoU/gIoU, AVSBench mIoU/F, GCG AP50/mIoU/recall/
CIDEr, and a 2-process gloo run equal to one process."""

from __future__ import annotations

import json
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from groundinggpt.grounding import mask_metrics
from groundinggpt.grounding.mask_metrics import (
    GCGMetrics,
    MaskIoU,
    SoundSegmentation,
    avsbench_f_curve,
    phrase_containment_match,
)
from groundinggpt.grounding.masks import encode_mask


def _floats(out: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in out.items()}


def _m(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# --- MaskIoU ----------------------------------------------------------------------------------

# (prediction, target): I / U per sample
MASK_SAMPLES = [
    (_m([[1, 1], [0, 0]]), _m([[1, 0], [1, 0]])),  # I 1, U 3: IoU 1/3
    (None, _m([[1, 1], [1, 1]])),  # a miss: I 0, U 4: IoU 0
    (_m([[0, 0], [0, 0]]), _m([[0, 0], [0, 0]])),  # empty for empty: I 0, U 0: IoU 1 (LISA)
    (torch.ones(3, 3, dtype=torch.bool), np.ones((3, 3), dtype=bool)),  # I 9, U 9: IoU 1
]


def test_ciou_and_giou_by_hand() -> None:
    m = MaskIoU()
    m.update(*zip(*MASK_SAMPLES, strict=True))
    out = _floats(m.compute())
    # cIoU = (1 + 0 + 0 + 9) / (3 + 4 + 0 + 9) = 10 / 16; gIoU = (1/3 + 0 + 1 + 1) / 4 = 7 / 12
    assert out == pytest.approx({"ciou": 10 / 16, "giou": 7 / 12, "n": 4})
    assert out["ciou"] != pytest.approx(out["giou"])


def test_mask_iou_checks_and_resets() -> None:
    m = MaskIoU()
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' own warning
        assert _floats(m.compute()) == {"ciou": 0.0, "giou": 0.0, "n": 0.0}
    with pytest.raises(ValueError, match="differ in size"):
        m.update([torch.ones(2, 3)], [torch.ones(3, 2)])
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        m.update([None, None], [torch.ones(2, 2)])
    with pytest.raises(ValueError, match="2-D"):
        m.update([None], [torch.ones(2, 2, 2)])
    m.update([None], [torch.ones(2, 2)])
    assert _floats(m.compute()) == {"ciou": 0.0, "giou": 0.0, "n": 1.0}
    m.reset()
    m.update([torch.ones(2, 2)], [torch.ones(2, 2)])
    assert _floats(m.compute()) == {"ciou": 1.0, "giou": 1.0, "n": 1.0}


# --- SoundSegmentation (AVSBench) ---------------------------------------------------------------

FRAME1 = (torch.tensor([[0.9, 0.2], [0.2, 0.2]]), _m([[1, 1], [0, 0]]))
FRAME2 = (torch.full((2, 2), 0.6), _m([[0, 0], [0, 0]]))
FRAME3 = (None, _m([[0, 1], [0, 0]]))
FRAME4 = (None, _m([[0, 0], [0, 0]]))
# frame 1: mask = p > 0.5 = top-left only: I 1, U 2 -> IoU 1/2. F-curve: for t <= 0.2 all 4
#   pixels, tp 2: P 1/2, R 1, F = 1.3 * 0.5 / (0.15 + 1) = 13/23; for 0.2 < t <= 0.9 one pixel,
#   tp 1: P 1, R 1/2, F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125; for t > 0.9 nothing: F 0 (NaN -> 0)
# frame 2: empty target, everything predicted: background share 0/4 -> IoU 0; no F
# frame 3: a miss on a non-empty target: IoU 0, F-curve 0
# frame 4: a miss on an empty target: background share 4/4 -> IoU 1; no F
F1_MAX = 0.8125


def test_avsbench_sample_average_by_hand() -> None:
    m = SoundSegmentation(from_logits=False)
    m.update(*zip(FRAME1, FRAME2, FRAME3, FRAME4, strict=True))
    out = _floats(m.compute())
    # mIoU = (1/2 + 0 + 0 + 1) / 4; F = max_t mean(curve1, zeros) over frames 1, 3 = 0.8125 / 2
    assert out == pytest.approx({"miou": 0.375, "fscore": F1_MAX / 2, "n": 4})


def test_avsbench_update_average_is_the_batch_protocol() -> None:
    m = SoundSegmentation(from_logits=False, average="update")
    m.update(*zip(FRAME1, strict=True))
    m.update(*zip(FRAME2, FRAME3, FRAME4, strict=True))
    # batches: mIoU 1/2 and (0 + 0 + 1)/3 -> 5/12; F: 0.8125 and max(zeros) = 0 -> 0.40625
    assert _floats(m.compute()) == pytest.approx({"miou": 5 / 12, "fscore": F1_MAX / 2, "n": 4})
    m.reset()
    m.update(*zip(FRAME1, FRAME3, strict=True))
    m.update(*zip(FRAME2, FRAME4, strict=True))
    # F: batch 1 max(mean(curve1, 0)) = 0.40625; batch 2 has no non-empty target: 0 (AVSBench)
    out = _floats(m.compute())
    assert out["fscore"] == pytest.approx(F1_MAX / 4) and out["miou"] == pytest.approx(0.375)


def test_avsbench_takes_logits_through_a_sigmoid() -> None:
    probs = SoundSegmentation(from_logits=False)
    logits = SoundSegmentation()
    for frame in (FRAME1, FRAME3):
        probs.update([frame[0]], [frame[1]])
        logits.update([None if frame[0] is None else torch.logit(frame[0])], [frame[1]])
    assert _floats(logits.compute()) == pytest.approx(_floats(probs.compute()), abs=1e-6)


def test_avsbench_f_curve_equals_direct_threshold_comparisons() -> None:
    """The searchsorted counts against AVSBench's loop: ``pred = p >= t`` at each t."""
    gen = torch.Generator().manual_seed(0)
    thresholds = torch.linspace(0, 1 - 1e-10, 255)
    for _ in range(5):
        prob = torch.rand(8, 8, generator=gen)
        prob[0, :4] = thresholds[100]  # values equal to a threshold: >= counts them
        target = torch.rand(8, 8, generator=gen) < 0.4
        expected = []
        for t in thresholds:
            pred = (prob >= t).double()
            tp = (pred * target).sum()
            precision, recall = tp / (pred.sum() + 1e-20), tp / (target.sum() + 1e-20)
            f = 1.3 * precision * recall / (0.3 * precision + recall)
            expected.append(0.0 if torch.isnan(f) else float(f))
        got = avsbench_f_curve(prob, target, thresholds)
        assert got.tolist() == pytest.approx(expected, abs=1e-12)


# --- GCG -------------------------------------------------------------------------------------


def _strip(start: int, stop: int, width: int = 40) -> np.ndarray:
    mask = np.zeros((1, width), dtype=bool)
    mask[0, start:stop] = True
    return mask


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((10, 10), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


A, B = _box(0, 4, 0, 4), _box(5, 10, 5, 10)
A_LEFT = _box(0, 4, 0, 3)  # IoU with A: 12 / 16 = 0.75
COLUMN = _box(0, 10, 0, 1)  # IoU with A: 4 / 22; with B: 0


def test_gcg_ap50_miou_recall_by_hand() -> None:
    m = GCGMetrics(java=False)
    m.update(
        [{"caption": "x", "phrases": ["dog", "grass"], "masks": [A_LEFT, COLUMN]}],
        [{"caption": "y", "phrases": ["The dog", "grass"], "masks": [A, encode_mask(B)]}],
    )
    out = _floats(m.compute())
    # AP50: detections in order A_LEFT (TP), COLUMN (FP): precision 1 up to recall 1/2, none
    #   beyond: 51 of COCO's 101 recall points -> 51 / 101
    assert out["mask_ap50"] == pytest.approx(51 / 101)
    # mIoU (greedy, pred x gt [[0.75, 0], [4/22, 0]]): pair 0.75, then only a 0 is left
    assert out["miou"] == pytest.approx(0.75)
    # recall: (gt dog, A_LEFT) has IoU 0.75 and "dog" ~ "The dog"; then the best IoU is 0
    assert out["recall"] == pytest.approx(1 / 2)
    assert out["n"] == 1 and set(out) == {"mask_ap50", "miou", "recall", "cider", "n"}


def test_gcg_ap50_with_scores_and_tied_scores_in_image_order() -> None:
    targets = [
        {"caption": "c", "phrases": ["a"], "masks": [A], "image_id": 1},
        {"caption": "c", "phrases": ["b"], "masks": [B], "image_id": 2},
    ]
    preds = [
        {"caption": "c", "phrases": ["a"], "masks": [A], "scores": [0.9]},
        {"caption": "c", "phrases": ["x", "b"], "masks": [COLUMN, B], "scores": [0.95, 0.5]},
    ]
    m = GCGMetrics(java=False)
    m.update(preds, targets)
    # by score: COLUMN (FP), A (TP), B (TP): precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the
    # interpolated precision is 2/3 at every recall point -> AP 2/3
    assert float(m.compute()["mask_ap50"]) == pytest.approx(2 / 3)
    # all scores 1.0: ties keep COCO's order (image 1, then image 2 in its given order): A (TP),
    # COLUMN (FP), B (TP): precision 1 at recall 1/2, then 2/3 -> (51 + 50 * 2/3) / 101
    tied = [{k: v for k, v in p.items() if k != "scores"} for p in preds]
    m = GCGMetrics(java=False)
    m.update(tied[::-1], targets[::-1])  # the update order does not matter, image_id does
    assert float(m.compute()["mask_ap50"]) == pytest.approx((51 + 50 * 2 / 3) / 101)
    ids_swapped = [{**t, "image_id": 3 - t["image_id"]} for t in targets]
    m = GCGMetrics(java=False)
    m.update(tied, ids_swapped)  # image 2 first: COLUMN, B, A -> 2/3 everywhere
    assert float(m.compute()["mask_ap50"]) == pytest.approx(2 / 3)


def test_gcg_miou_greedy_is_glamm_and_hungarian_differs() -> None:
    # 1 x 40 strips: g0 = [0, 10), g1 = [10, 20); p0 = [0, 19), p1 = [0, 5)
    # IoU: p0-g0 10/19, p0-g1 9/20, p1-g0 5/10, p1-g1 0
    gts = [_strip(0, 10), _strip(10, 20)]
    preds = [_strip(0, 19), _strip(0, 5)]
    sample = (
        [{"caption": "c", "phrases": ["p0", "p1"], "masks": preds}],
        [{"caption": "c", "phrases": ["g0", "g1"], "masks": gts}],
    )
    greedy, hungarian = GCGMetrics(java=False), GCGMetrics(java=False, matching="hungarian")
    greedy.update(*sample)
    hungarian.update(*sample)
    # greedy takes 10/19 first, leaving p1-g1 = 0: one pair; the unpaired g1 does not count
    assert float(greedy.compute()["miou"]) == pytest.approx(10 / 19)
    # the assignment of maximum total IoU: p0-g1 + p1-g0 = 9/20 + 1/2 -> mean 0.475
    assert float(hungarian.compute()["miou"]) == pytest.approx((9 / 20 + 1 / 2) / 2)


def test_gcg_recall_stops_at_the_first_failed_pair_like_glamm() -> None:
    b_most = _box(5, 10, 6, 10)  # IoU with B: 20 / 25 = 0.8
    sample = (
        [{"caption": "c", "phrases": ["cat", "cat"], "masks": [A, b_most]}],
        [{"caption": "c", "phrases": ["dog", "cat"], "masks": [A, B]}],
    )
    m = GCGMetrics(java=False)
    m.update(*sample)
    # the best pair (dog, A) has IoU 1 but the phrase "cat": GLaMM stops there, so the good
    # (cat, 0.8) pair is never tried: 0 of 2
    assert float(m.compute()["recall"]) == 0.0
    anything = GCGMetrics(java=False, phrase_match=lambda pred, gt: True)
    anything.update(*sample)
    assert float(anything.compute()["recall"]) == 1.0
    # a second image without predictions adds 2 ground truth phrases and no match: 2 / 4
    anything.update(
        [{"caption": "c", "phrases": [], "masks": []}],
        [{"caption": "c", "phrases": ["a", "b"], "masks": [A, B]}],
    )
    out = _floats(anything.compute())
    assert out["recall"] == pytest.approx(2 / 4)
    assert out["miou"] == pytest.approx((0.9 + 0.0) / 2)  # image 1 pairs (1, 0.8); image 2: 0


def test_phrase_containment_match() -> None:
    assert phrase_containment_match("The dog.", "a dog")
    assert phrase_containment_match("dog", "a brown dog on the left")
    assert phrase_containment_match("a big brown dog", "brown dog")
    assert not phrase_containment_match("do", "dog")
    assert not phrase_containment_match("the", "the")  # nothing left after normalising
    assert not phrase_containment_match("cat", "dog")


def test_gcg_cider_by_hand() -> None:
    # Captions without a shared word between the two images: every n-gram has document
    # frequency 1, IDF log 2. An exact caption has cosine 1 for n = 1..4 -> CIDEr-D 10 * 1;
    # a caption sharing no n-gram with its reference scores 0. Mean over images: 5.
    m = GCGMetrics(java=False)
    m.update(
        [
            {"caption": "A small dog runs home.", "phrases": [], "masks": []},
            {"caption": "purple elephants fly south", "phrases": [], "masks": []},
        ],
        [
            {"caption": "a small dog runs home", "phrases": [], "masks": []},
            {"caption": ["two cats sleep quietly"], "phrases": [], "masks": []},
        ],
    )
    out = _floats(m.compute())
    assert out["cider"] == pytest.approx(5.0)
    assert out["mask_ap50"] == 0.0 and out["recall"] == 0.0 and out["n"] == 2


def test_gcg_without_java_warns_once_and_omits_meteor(monkeypatch) -> None:
    monkeypatch.setattr(mask_metrics.shutil, "which", lambda name: None)
    m = GCGMetrics()
    m.update(
        [{"caption": "a dog", "phrases": ["dog"], "masks": [A]}],
        [{"caption": "a dog", "phrases": ["dog"], "masks": [A]}],
    )
    with pytest.warns(UserWarning, match="no `java` on PATH, so METEOR is left out"):
        out = m.compute()
    assert "meteor" not in out and float(out["mask_ap50"]) == pytest.approx(1.0)
    m.update(
        [{"caption": "a cat", "phrases": [], "masks": []}],
        [{"caption": "a cat", "phrases": [], "masks": []}],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.compute()  # no second warning
    with pytest.raises(RuntimeError, match="java=True"):
        GCGMetrics(java=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_gcg_meteor_with_java() -> None:
    m = GCGMetrics(java=True)
    m.update(
        [{"caption": "a dog runs on the grass", "phrases": [], "masks": []}],
        [{"caption": "A dog is running on the grass.", "phrases": [], "masks": []}],
    )
    out = _floats(m.compute())
    assert 0.0 < out["meteor"] < 1.0


def test_gcg_input_checks() -> None:
    m = GCGMetrics(java=False)
    with pytest.raises(ValueError, match="1 phrases but 2 masks"):
        m.update([{"caption": "c", "phrases": ["a"], "masks": [A, B]}], [{"caption": "c"}])
    with pytest.raises(ValueError, match="different sizes"):
        m.update(
            [{"caption": "c", "phrases": ["a"], "masks": [A]}],
            [{"caption": "c", "phrases": ["a"], "masks": [_strip(0, 3)]}],
        )
    with pytest.raises(ValueError, match="at least one reference"):
        m.update([{"caption": "c"}], [{"caption": []}])
    with pytest.raises(ValueError, match="1 scores but 0 masks"):
        m.update([{"caption": "c", "scores": [1.0]}], [{"caption": "c"}])
    out = _floats(m.compute())
    assert out == {"mask_ap50": 0.0, "miou": 0.0, "recall": 0.0, "cider": 0.0, "n": 0.0}


# --- DDP: two gloo processes equal one process --------------------------------------------------


def _sound_frames() -> tuple[list, list]:
    gen = torch.Generator().manual_seed(1)
    preds, targets = [], []
    for i in range(7):
        target = torch.rand(6, 6, generator=gen) < (0.0 if i % 3 == 0 else 0.4)
        logits = torch.randn(6, 6, generator=gen) * 3
        preds.append(None if i == 4 else logits)
        targets.append(target)
    return preds, targets


def _gcg_samples() -> tuple[list, list]:
    preds = [
        {"caption": "a dog on grass", "phrases": ["dog", "grass"], "masks": [A_LEFT, COLUMN]},
        {"caption": "a cat", "phrases": ["cat"], "masks": [B]},
        {"caption": "two birds sing", "phrases": ["birds"], "masks": [A]},
    ]
    targets = [
        {"caption": "a dog on the grass", "phrases": ["dog", "grass"], "masks": [A, B]},
        {"caption": "one cat sits", "phrases": ["cat"], "masks": [B]},
        {"caption": "birds sing loudly", "phrases": ["birds", "tree"], "masks": [A_LEFT, B]},
    ]
    return preds, targets


def _all_metrics(
    mask: tuple, sound: tuple, gcg: tuple, batches: list[list[int]]
) -> dict[str, dict[str, float]]:
    metrics = {
        "mask": MaskIoU(),
        "sound": SoundSegmentation(),
        "sound_update": SoundSegmentation(average="update"),
        "gcg": GCGMetrics(java=False),
    }
    metrics["mask"].update(*mask)
    for batch in batches:
        for name in ("sound", "sound_update"):
            metrics[name].update([sound[0][i] for i in batch], [sound[1][i] for i in batch])
    metrics["gcg"].update(*gcg)
    return {name: _floats(m.compute()) for name, m in metrics.items()}


# rank 0: samples 0, 2 of the masks, sound batches [0, 1], [2]; all three GCG images
# rank 1: samples 1, 3, sound batches [3, 4, 5], [6]; no GCG image at all
MASK_SHARDS = [[0, 2], [1, 3]]
SOUND_BATCHES = [[[0, 1], [2]], [[3, 4, 5], [6]]]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    # A forked child must not enter an OpenMP region once the parent has used one (GNU
    # OpenMP is not fork-safe: searchsorted would hang here after the tests above); one
    # thread per rank keeps torch's ops inline.
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        preds, targets = zip(*(MASK_SAMPLES[i] for i in MASK_SHARDS[rank]), strict=True)
        gcg = _gcg_samples() if rank == 0 else ([], [])
        result = _all_metrics((preds, targets), _sound_frames(), gcg, SOUND_BATCHES[rank])
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    # fork, not spawn (as tests/grounding/test_metrics.py): no re-import of torch in the children
    mp.start_processes(
        _ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork"
    )
    every_batch = [b for rank in SOUND_BATCHES for b in rank]
    expected = _all_metrics(
        tuple(zip(*MASK_SAMPLES, strict=True)), _sound_frames(), _gcg_samples(), every_batch
    )
    assert expected["mask"]["n"] == 4 and expected["sound"]["n"] == 7 and expected["gcg"]["n"] == 3
    for rank in range(2):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert set(result) == set(expected)
        for name in expected:
            assert result[name] == pytest.approx(expected[name], abs=1e-12), (rank, name)
