"""Tests of the grounding metrics: hand-computed cases, routing by task, baselines, DDP sync."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from groundinggpt.grounding.metrics import (
    BoxAccuracy,
    PopeMetrics,
    TemporalGroundingRecall,
    pope_rates,
    threshold_hits,
    threshold_rates,
)
from groundinggpt.grounding.tasks import GroundingMetrics, baseline_metrics

FULL = (0.0, 0.0, 1.0, 1.0)
CONTRACT_KEYS = {
    "rec/acc@0.5", "vtg/r1@0.3", "vtg/r1@0.5", "vtg/r1@0.7", "vtg/miou", "sl/acc@0.5",
    "pope/accuracy", "pope/precision", "pope/recall", "pope/f1", "pope/yes_ratio",
}  # fmt: skip


def _floats(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


# --- BoxAccuracy / TemporalGroundingRecall ----------------------------------------------------


def test_box_accuracy_iou_exactly_at_threshold_is_a_hit() -> None:
    m = BoxAccuracy()
    # IoUs: 0.5 exactly (hit, ">="), 0.49 (miss), 1.0 (hit), None (miss, IoU 0)
    m.update([(0, 0, 0.5, 1), (0, 0, 0.49, 1), FULL, None], [FULL] * 4)
    out = _floats(m.compute())
    assert out == pytest.approx({"acc@0.5": 0.5, "miou": (0.5 + 0.49 + 1.0 + 0.0) / 4})


def test_box_accuracy_several_thresholds_and_accumulation() -> None:
    preds = [(0, 0, 0.8, 1), (0, 0, 0.6, 1), (0.5, 0.5, 1, 1)]  # IoUs 0.8, 0.6, 0.25
    m = BoxAccuracy(thresholds=(0.5, 0.75))
    for p in preds:  # one by one must equal one batch
        m.update([p], [FULL])
    out = _floats(m.compute())
    assert set(out) == {"acc@0.5", "acc@0.75", "miou"}
    assert out["acc@0.5"] == pytest.approx(2 / 3)
    assert out["acc@0.75"] == pytest.approx(1 / 3)
    assert out["miou"] == pytest.approx((0.8 + 0.6 + 0.25) / 3)
    m.reset()
    m.update(preds, [FULL] * 3)
    assert _floats(m.compute()) == pytest.approx(out)


def test_box_accuracy_empty_and_bad_input() -> None:
    m = BoxAccuracy()
    with pytest.warns(UserWarning):  # torchmetrics: compute before update
        assert _floats(m.compute()) == {"acc@0.5": 0.0, "miou": 0.0}
    with pytest.raises(ValueError, match="predictions"):
        m.update([FULL], [FULL, FULL])
    with pytest.raises(ValueError, match="targets"):
        m.update([FULL], [(0.0, 0.0, 1.0)])
    with pytest.raises(ValueError, match="targets"):
        m.update([None], [(0.0, float("nan"), 1.0, 1.0)])
    with pytest.raises(ValueError):
        BoxAccuracy(thresholds=(0.0,))
    with pytest.raises(ValueError):
        BoxAccuracy(thresholds=())


def test_temporal_recall_hand_case() -> None:
    m = TemporalGroundingRecall()
    # IoUs with (0, 1): 0.3 exactly, 0.6, 0.75; with (0.2, 0.4): disjoint 0; None 0
    preds = [(0.0, 0.3), (0.0, 0.6), (0.0, 0.75), (0.5, 0.9), None]
    targets = [(0.0, 1.0)] * 3 + [(0.2, 0.4)] * 2
    m.update(preds, targets)
    out = _floats(m.compute())
    assert out == pytest.approx(
        {"r1@0.3": 3 / 5, "r1@0.5": 2 / 5, "r1@0.7": 1 / 5, "miou": (0.3 + 0.6 + 0.75) / 5}
    )


# --- PopeMetrics ------------------------------------------------------------------------------


def test_pope_hand_case_with_unparsed() -> None:
    m = PopeMetrics()
    preds = [True, True, False, False, True, None, None, False]
    labels = [True, True, True, False, False, True, False, False]
    # parsed: tp=2, fn=1, tn=2, fp=1; unparsed: one with label yes (FN), one with label no (FP)
    m.update(preds, labels)
    tp, fp, tn, fn = 2, 2, 2, 2
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert _floats(m.compute()) == pytest.approx(
        {
            "accuracy": (tp + tn) / 8,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall),
            "yes_ratio": 3 / 8,  # answers that parsed as yes; unparsed ones are not yes
            "unparsed": 2 / 8,
        }
    )


def test_pope_zero_division_is_zero() -> None:
    m = PopeMetrics()
    m.update([False, False], [False, False])
    out = _floats(m.compute())
    assert out["accuracy"] == 1.0
    assert out["precision"] == out["recall"] == out["f1"] == out["yes_ratio"] == 0.0


def test_pope_rejects_non_boolean_targets() -> None:
    with pytest.raises(ValueError, match="booleans"):
        PopeMetrics().update([True], [None])  # type: ignore[list-item]


# --- GroundingMetrics -------------------------------------------------------------------------

TASKS = ["rec", "rec", "sl", "vtg", "vtg", "pope", "pope", "caption"]
OUTPUTS = [
    "[0, 0, 0.5, 1]",  # IoU 0.5 -> hit
    "I cannot tell",  # miss
    "It is the [0.0,0.0,1.0,1.0] one",  # hit
    "{0.00, 0.60}",  # IoU 0.6
    "{0.5, 0.9}",  # disjoint
    "Yes, there is.",
    "Maybe.",
    "a red circle",
]
REFERENCES = [
    "[0.000, 0.000, 1.000, 1.000]",
    "[0.000, 0.000, 1.000, 1.000]",
    "[0.000, 0.000, 1.000, 1.000]",
    "{0.00, 1.00}",
    "{0.20, 0.40}",
    "Yes.",
    "No.",
    "a blue square",
]


def test_grounding_metrics_routes_and_flattens() -> None:
    m = GroundingMetrics()
    m.update(TASKS, OUTPUTS, REFERENCES)
    out = m.compute()
    assert set(out) >= CONTRACT_KEYS
    assert all(isinstance(v, float) for v in out.values())
    assert out["rec/acc@0.5"] == 0.5 and out["rec/miou"] == pytest.approx(0.25)
    assert out["sl/acc@0.5"] == 1.0
    assert out["vtg/r1@0.5"] == 0.5 and out["vtg/r1@0.7"] == 0.0
    assert out["vtg/miou"] == pytest.approx(0.3)
    assert out["pope/accuracy"] == 0.5 and out["pope/unparsed"] == 0.5
    assert m.num_ignored == 1
    m.reset()
    assert m.num_ignored == 0


def test_grounding_metrics_omits_empty_tasks() -> None:
    m = GroundingMetrics(box_thresholds=(0.5, 0.75))
    m.update(["rec"], ["[0, 0, 0.8, 1]"], ["[0, 0, 1, 1]"])
    expected = {"rec/acc@0.5": 1.0, "rec/acc@0.75": 1.0, "rec/miou": 0.8, "rec/count": 1.0}
    assert m.compute() == pytest.approx(expected)
    m.reset()
    assert m.compute() == {}


def test_grounding_metrics_unparsable_reference_raises_without_side_effects() -> None:
    m = GroundingMetrics()
    with pytest.raises(ValueError, match="reference 2 of task 'vtg'"):
        m.update(
            ["rec", "caption", "vtg"],
            ["[0, 0, 1, 1]", "a cat", "{0, 1}"],
            ["[0, 0, 1, 1]", "a cat", "at the start"],
        )
    assert m.compute() == {}
    assert m.num_ignored == 0
    with pytest.raises(ValueError):
        m.update(["rec"], ["a", "b"], ["[0, 0, 1, 1]"])


# --- baselines --------------------------------------------------------------------------------


def test_baseline_metrics_hand_case() -> None:
    train = {
        "rec": ["[0, 0, 0.5, 0.5]", "[0.5, 0.5, 1, 1]"],  # mean box [0.25, 0.25, 0.75, 0.75]
        "vtg": ["{0.0, 0.2}", "{0.4, 1.0}"],  # mean span {0.2, 0.6}
        "caption": ["a cat"],
    }
    evaluation = {
        "rec": ["[0.25, 0.25, 0.75, 0.75]", "[0, 0, 0.25, 0.25]"],  # IoU 1 and 0
        "vtg": ["{0.2, 0.6}"],
        "pope": ["Yes.", "No.", "No.", "Yes."],
        "caption": ["a dog"],
    }
    out = baseline_metrics(train, evaluation)
    assert {k.split("/")[0] for k in out} == {"rec", "vtg", "pope"}
    assert out["rec/acc@0.5"] == 0.5 and out["rec/miou"] == pytest.approx(0.5)
    assert out["vtg/r1@0.7"] == 1.0
    assert out["pope/yes_ratio"] == 1.0 and out["pope/recall"] == 1.0
    assert out["pope/accuracy"] == 0.5 and out["pope/precision"] == 0.5


def test_baseline_metrics_needs_training_references() -> None:
    with pytest.raises(ValueError, match="no training references for task 'sl'"):
        baseline_metrics({"rec": ["[0, 0, 1, 1]"]}, {"sl": ["[0, 0, 1, 1]"]})
    assert baseline_metrics({}, {"pope": ["No."]})["pope/accuracy"] == 0.0


# --- DDP: synced compute equals single-process compute on the union ---------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(rank: int) -> tuple[list[str], list[str], list[str]]:
    # Uneven shards; rank 1 has no "sl" and no "pope" samples at all.
    idx = [0, 2, 5, 6, 7] if rank == 0 else [1, 3, 4]
    return tuple([seq[i] for i in idx] for seq in (TASKS, OUTPUTS, REFERENCES))  # type: ignore[return-value]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        m = GroundingMetrics()
        m.update(*_shard(rank))
        result = m.compute()
        m.reset()
        result_after_reset = m.compute()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"{rank}.json").write_text(json.dumps([result, result_after_reset]))


@pytest.mark.timeout(120)
def test_ddp_sync_equals_single_process(tmp_path: Path) -> None:
    # fork, not spawn: a spawned child re-imports torch and torchmetrics (~10 s on 2 cores);
    # safe here because the parent has no CUDA context and the workers only touch tiny tensors.
    mp.start_processes(
        _ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork"
    )
    single = GroundingMetrics()
    single.update(TASKS, OUTPUTS, REFERENCES)
    expected = single.compute()
    for rank in range(2):
        result, after_reset = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result == pytest.approx(expected, abs=1e-12)
        assert set(result) == set(expected)
        assert after_reset == {}


# --- shared helpers (also used by the benchmark metrics) --------------------------------------


def test_f1_with_precision_plus_recall_below_one() -> None:
    # tp 1, fp 1, fn 3: precision 0.5, recall 0.25, F1 = 2 * 0.125 / 0.75 = 1/3. A ratio that
    # clamped its denominator to >= 1 would give 0.25 here.
    m = PopeMetrics()
    m.update([True, True, False, False, False], [True, False, True, True, True])
    assert float(m.compute()["f1"]) == pytest.approx(1 / 3)
    rates = pope_rates(torch.tensor(1), torch.tensor(1), torch.tensor(0), torch.tensor(3))
    assert float(rates["f1"]) == pytest.approx(1 / 3)
    assert float(rates["yes_ratio"]) == pytest.approx(2 / 5)


def test_threshold_helpers_and_update_iou() -> None:
    iou = torch.tensor([0.3, 0.5, 0.49999, 1.0], dtype=torch.float64)
    assert threshold_hits(iou, (0.3, 0.5, 0.9)).tolist() == [4, 2, 1]
    rates = threshold_rates(torch.tensor([4, 2]), torch.tensor(4), (0.3, 0.5), "acc")
    assert {k: float(v) for k, v in rates.items()} == {"acc@0.3": 1.0, "acc@0.5": 0.5}
    m = BoxAccuracy()
    m.update_iou(iou)
    assert _floats(m.compute()) == pytest.approx({"acc@0.5": 0.5, "miou": 2.29999 / 4})


def test_binomial_p_value_matches_exact_sums() -> None:
    from math import comb

    from groundinggpt.grounding.metrics import binomial_p_value
    from groundinggpt.grounding.tasks import significance

    assert binomial_p_value(8, 10, 0.5) == pytest.approx(56 / 1024)
    exact = sum(comb(256, k) * 0.3**k * 0.7 ** (256 - k) for k in range(90, 257))
    assert binomial_p_value(90, 256, 0.3) == pytest.approx(exact, rel=1e-9)
    assert binomial_p_value(0, 256, 0.3) == pytest.approx(1.0)
    metrics = {"val/rec/acc@0.5": 0.5, "val/rec/count": 10.0, "baseline/val/rec/acc@0.5": 0.5}
    assert significance(metrics) == {"val/rec/p_value": pytest.approx(638 / 1024)}
    zero = {"val/sl/acc@0.5": 1 / 64, "val/sl/count": 64.0, "baseline/val/sl/acc@0.5": 0.0}
    assert significance(zero)["val/sl/p_value"] == pytest.approx(1 - (1 - 0.5 / 64) ** 64)
