"""Tests of scoring and the benchmark metrics against hand-computed values."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tests.evaluation.fixtures import write_image, write_vggss

from groundinggpt.evaluation.benchmarks import BenchmarkSample, complete_meta, load_benchmark
from groundinggpt.evaluation.scoring import BenchmarkMetrics, compute_quietly, score, union_iou


def _rec(target, width: int, height: int, sid: str = "1") -> BenchmarkSample:
    meta = {"width": width, "height": height}
    return BenchmarkSample(sid, "rec", {"image": "/x.jpg"}, "<image>\nq", list(target), meta)


def _vtg(target, duration: float, sid: str = "1") -> BenchmarkSample:
    meta = {"duration": duration}
    return BenchmarkSample(sid, "vtg", {"video": "/x.mp4"}, "<video>\nq", list(target), meta)


def _pope(label: str, sid: str = "1") -> BenchmarkSample:
    return BenchmarkSample(sid, "pope", {"image": "/x.jpg"}, "<image>\nq", label, {})


# --- REC: padding round trip and hand cases ---------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(640, 427), (300, 500), (97, 31), (256, 256)])
def test_rec_padding_round_trip_within_one_pixel(width: int, height: int) -> None:
    rng = random.Random(width * 1000 + height)
    for k in range(25):
        x0, x1 = sorted(rng.uniform(0, width) for _ in range(2))
        y0, y1 = sorted(rng.uniform(0, height) for _ in range(2))
        sample = _rec([x0, y0, x1, y1], width, height, str(k))
        text = sample.to_record()["conversations"][1]["value"]  # relative to the padded square
        result = score(sample, f"The box is {text}.")
        assert result["prediction"] == pytest.approx([x0, y0, x1, y1], abs=1.0)
        assert not result["skipped"] and not result["unparsed"]


def test_rec_hand_computed_iou_in_original_pixels() -> None:
    # 100 x 50 image: padded square 100, 25 px of padding above and below.
    sample = _rec([10, 0, 30, 50], 100, 50)
    result = score(sample, "[0.1, 0.25, 0.5, 0.75]")
    assert result["prediction"] == pytest.approx([10, 0, 50, 50])
    assert result["score"] == pytest.approx(0.5)  # 20x50 / 40x50
    # Reaching into the padding is clipped to the image: same box, same IoU.
    assert score(sample, "[0.1, 0.0, 0.5, 1.0]")["prediction"] == pytest.approx([10, 0, 50, 50])
    # Entirely inside the top padding: zero area in the image, IoU 0.
    result = score(sample, "[0.0, 0.0, 1.0, 0.2]")
    assert result["prediction"] == pytest.approx([0, 0, 100, 0]) and result["score"] == 0.0
    # Not un-padding would give [10, 25, 50, 75] and IoU 1/3: the test can tell.
    assert score(sample, "[0.1, 0.25, 0.3, 0.75]")["score"] == pytest.approx(1.0)


def test_unparsed_and_skipped_are_misses() -> None:
    sample = _rec([10, 0, 30, 50], 100, 50)
    unparsed = score(sample, "somewhere on the left")
    assert unparsed["prediction"] is None and unparsed["score"] == 0.0 and unparsed["unparsed"]
    skipped = score(sample, None)
    assert skipped["skipped"] and skipped["score"] == 0.0 and skipped["target"] == [10, 0, 30, 50]
    m = BenchmarkMetrics("rec")
    m.update([score(sample, "[0.1, 0.25, 0.3, 0.75]"), unparsed, skipped])
    out = compute_quietly(m)
    assert out["rec/acc@0.5"] == pytest.approx(1 / 3)  # skipped counts in the denominator
    assert (out["rec/count"], out["rec/skipped"], out["rec/unparsed"]) == (3.0, 1.0, 1.0)


def test_score_completes_meta_when_needed(tmp_path: Path) -> None:
    ann, frames, audio = write_vggss(tmp_path)
    sample = load_benchmark("vggss", ann, frames, audio_dir=audio)[0]  # 80 x 40, no target yet
    # Box [8, 8, 40, 24] px -> padded square 80 (dy = 20): [0.1, 0.35, 0.5, 0.55].
    result = score(sample, "[0.1, 0.35, 0.5, 0.55]")
    assert result["target"] == pytest.approx([8, 8, 40, 24])
    assert result["score"] == pytest.approx(1.0) and result["ciou"] == pytest.approx(1.0)
    missing = BenchmarkSample("m", "rec", {"image": str(tmp_path / "nope.jpg")}, "q", [0, 0, 1, 1])
    assert score(missing, None)["score"] == 0.0  # a skip never touches the media


# --- VTG --------------------------------------------------------------------------------------


def test_vtg_span_scaled_by_true_duration() -> None:
    sample = _vtg([2.0, 6.0], duration=10.0)
    result = score(sample, "It happens at {0.2, 0.4}.")
    assert result["prediction"] == pytest.approx([2.0, 4.0])
    assert result["score"] == pytest.approx(0.5)
    assert score(sample, "{0.60, 0.20}")["score"] == pytest.approx(1.0)  # reversed: sorted
    assert score(sample, "at 2 s")["unparsed"]


def test_vtg_metrics_hand_values() -> None:
    sample = _vtg([0.0, 10.0], duration=10.0)
    outputs = ["{0.0, 0.3}", "{0.0, 0.5}", "{0.0, 0.69}", "{0.0, 0.7}", None]
    m = BenchmarkMetrics("vtg")
    m.update([score(sample, o) for o in outputs])
    out = compute_quietly(m)
    assert out["vtg/r1@0.3"] == pytest.approx(4 / 5)  # IoU 0.3 exactly is a hit
    assert out["vtg/r1@0.5"] == pytest.approx(3 / 5)
    assert out["vtg/r1@0.7"] == pytest.approx(1 / 5)
    assert out["vtg/miou"] == pytest.approx((0.3 + 0.5 + 0.69 + 0.7) / 5)
    assert out["vtg/skipped"] == 1.0


# --- POPE -------------------------------------------------------------------------------------


def test_pope_metrics_hand_values() -> None:
    labels = ["yes", "yes", "yes", "no", "no", "no", "yes", "no"]
    outputs = ["Yes.", "No.", "Yes", "Yes", "No", "No", None, None]
    # tp 2, fn 1, fp 1, tn 2; skipped: one yes (-> fn), one no (-> fp, but not a "yes")
    m = BenchmarkMetrics("pope")
    pairs = enumerate(zip(labels, outputs, strict=True))
    m.update([score(_pope(lab, str(i)), o) for i, (lab, o) in pairs])
    out = compute_quietly(m)
    tp, fp, tn, fn = 2, 1 + 1, 2, 1 + 1
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert out["pope/accuracy"] == pytest.approx((tp + tn) / 8)
    assert out["pope/precision"] == pytest.approx(precision)
    assert out["pope/recall"] == pytest.approx(recall)
    assert out["pope/f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert out["pope/yes_ratio"] == pytest.approx(3 / 8)  # three answers were "yes"
    assert (out["pope/count"], out["pope/skipped"]) == (8.0, 2.0)
    assert score(_pope("no"), "No, there is not.") == {
        "id": "1", "task": "pope", "prediction": "no", "target": "no", "score": 1.0,
        "skipped": False, "unparsed": False,
    }  # fmt: skip


# --- SL: several gt boxes and cIoU ------------------------------------------------------------


def test_union_iou_hand_cases() -> None:
    assert union_iou([0, 0, 2, 1], [[0, 0, 1, 1], [1, 0, 2, 1]]) == pytest.approx(1.0)
    # Overlapping gt boxes: union area 1 + 1 - 0.25 = 1.75; prediction = first box.
    assert union_iou([0, 0, 1, 1], [[0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5]]) == pytest.approx(1 / 1.75)
    assert union_iou([5, 5, 6, 6], [[0, 0, 1, 1]]) == 0.0
    assert union_iou([0, 0, 0, 0], [[0, 0, 0, 0]]) == 0.0


def test_sl_metrics_best_box_and_ciou() -> None:
    boxes = [[0.0, 0.0, 50.0, 100.0], [50.0, 0.0, 100.0, 100.0]]
    meta = {"width": 100, "height": 100, "boxes": boxes}
    sample = BenchmarkSample("s", "sl", {"image": "/a", "sound": "/b"}, "q", boxes[0], meta)
    whole = score(sample, "[0, 0, 1, 1]")  # covers both annotator boxes
    assert whole["score"] == pytest.approx(0.5) and whole["ciou"] == pytest.approx(1.0)
    right = score(sample, "[0.5, 0, 1, 1]")  # the second box exactly
    assert right["score"] == pytest.approx(1.0) and right["ciou"] == pytest.approx(0.5)
    m = BenchmarkMetrics("sl")
    m.update([whole, right, score(sample, None)])
    out = compute_quietly(m)
    assert out["sl/acc@0.5"] == pytest.approx(2 / 3)
    assert out["sl/miou"] == pytest.approx(1.5 / 3)
    assert out["sl/ciou"] == pytest.approx(2 / 3)  # cIoU 1.0 and 0.5 reach 0.5
    # AUC over thresholds 0..1 of the share with cIoU >= t: 1 at t=0, 2/3 up to 0.5, 1/3 after.
    grid = torch.linspace(0, 1, 21, dtype=torch.float64)
    share = torch.tensor([1.0] + [2 / 3] * 10 + [1 / 3] * 10, dtype=torch.float64)
    assert out["sl/auc"] == pytest.approx(float(torch.trapezoid(share, grid)))


# --- BenchmarkMetrics: keys, accumulation, DDP-style merge ------------------------------------


def test_rec_metric_keys_and_thresholds() -> None:
    sample = _rec([0, 0, 100, 100], 100, 100)
    # IoUs: 0.3 exactly, 0.55, 0.95, plus a skip
    outputs = ["[0, 0, 0.3, 1]", "[0, 0, 0.55, 1]", "[0, 0, 0.95, 1]", None]
    m = BenchmarkMetrics("rec")
    m.update([score(sample, o) for o in outputs])
    out = compute_quietly(m)
    expected_acc = {0.3: 3, 0.4: 2, 0.5: 2, 0.6: 1, 0.7: 1, 0.8: 1, 0.9: 1}
    for t, hits in expected_acc.items():
        assert out[f"rec/acc@{t:g}"] == pytest.approx(hits / 4), t
    assert out["rec/miou"] == pytest.approx((0.3 + 0.55 + 0.95) / 4)
    assert set(out) == {f"rec/acc@{t:g}" for t in expected_acc} | {
        "rec/miou", "rec/count", "rec/skipped", "rec/unparsed"}  # fmt: skip


def test_metrics_merge_like_ddp_and_reject_other_tasks() -> None:
    results = [score(_vtg([0, 10], 10.0, str(i)), f"{{0, 0.{i}}}") for i in range(1, 10)]
    whole = BenchmarkMetrics("vtg")
    whole.update(results)
    a, b = BenchmarkMetrics("vtg"), BenchmarkMetrics("vtg")
    a.update(results[:4])
    b.update(results[4:])
    a.merge_state(b)  # what the sum reduction does across ranks
    assert compute_quietly(a) == pytest.approx(compute_quietly(whole))
    with pytest.raises(ValueError, match="another task"):
        whole.update([score(_pope("yes"), "Yes")])
    with pytest.raises(ValueError, match="task must be"):
        BenchmarkMetrics("caption")
    empty = compute_quietly(BenchmarkMetrics("pope"))
    assert empty["pope/accuracy"] == 0.0 and empty["pope/count"] == 0.0


def test_end_to_end_on_written_images(tmp_path: Path) -> None:
    """Reference answers of real samples score perfectly after complete_meta."""
    write_image(tmp_path / "a.png", 61, 23)
    sample = BenchmarkSample("a", "rec", {"image": str(tmp_path / "a.png")}, "<image>\nq",
                             [3.0, 2.0, 40.0, 20.0], {"width": None, "height": None})  # fmt: skip
    full = complete_meta(sample)
    result = score(full, full.reference())
    assert result["score"] == pytest.approx(1.0, abs=0.05)
    assert result["prediction"] == pytest.approx([3.0, 2.0, 40.0, 20.0], abs=1.0)


def test_eval_and_training_validation_count_with_the_task_registry_metrics() -> None:
    """eval.py's metrics are the registry's classes, fed in original units: the same answers
    give the same rates as training validation (fractions of the video) gives."""
    from groundinggpt.grounding.tasks import REGISTRY, GroundingMetrics

    validation = GroundingMetrics()
    for task in ("rec", "sl", "vtg", "pope"):
        assert type(BenchmarkMetrics(task).rates) is type(validation.metrics[task])
        assert REGISTRY[task].update_scored is not None
    answers = ["{0.0, 0.4}", "{0.1, 0.9}", "{0.5, 1.0}", "no span", "{0.2, 0.6}"]
    targets = [[0.0, 0.5], [0.2, 0.8], [0.0, 0.3], [0.1, 0.2], [0.2, 0.6]]
    bench = BenchmarkMetrics("vtg", thresholds=(0.3, 0.5, 0.7))
    bench.update([score(_vtg([a * 20 for a in t], 20.0, str(i)), out)
                  for i, (out, t) in enumerate(zip(answers, targets, strict=True))])  # fmt: skip
    validation.update(["vtg"] * 5, answers, [f"{{{a}, {b}}}" for a, b in targets])
    got, want = compute_quietly(bench), validation.compute()
    for key in ("r1@0.3", "r1@0.5", "r1@0.7", "miou", "count"):
        assert got[f"vtg/{key}"] == pytest.approx(want[f"vtg/{key}"], abs=1e-9), key
    assert got["vtg/unparsed"] == 1.0 and 0.0 < got["vtg/r1@0.5"] < 1.0
    pope = BenchmarkMetrics("pope")
    pope.update([score(_pope(label, str(i)), out) for i, (label, out) in
                 enumerate([("yes", "Yes."), ("no", "Yes."), ("no", "No."), ("yes", None)])])  # fmt: skip
    pope_values = compute_quietly(pope)
    assert pope_values["pope/accuracy"] == 0.5 and pope_values["pope/yes_ratio"] == 0.5
    assert pope_values["pope/skipped"] == 1.0 and pope_values["pope/count"] == 4.0
