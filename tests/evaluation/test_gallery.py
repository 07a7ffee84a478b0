"""eval.py draws the worst and best answers of every task next to predictions.jsonl."""

from __future__ import annotations

import json

from PIL import Image
from tests.conftest import synthetic_eval_config

from groundinggpt.evaluation.gallery import worst_and_best


def _row(task: str, index: int, score: float, skipped=None) -> dict:
    output = None if skipped else "x"
    return {"task": task, "index": index, "score": score, "skipped": skipped, "output": output}


def test_worst_and_best_rank_by_score_and_leave_skipped_samples_out() -> None:
    rows = [_row("rec", 0, 0.5), _row("rec", 1, 0.1), _row("rec", 2, 0.9),
            _row("rec", 3, 0.0, skipped="missing"), _row("pope", 4, 1.0)]  # fmt: skip
    picked = worst_and_best(rows, k=2)
    worst, best = picked["rec"]
    assert [r["index"] for r in worst] == [1, 0] and [r["index"] for r in best] == [2]
    assert [r["index"] for r in picked["pope"][0]] == [4] and picked["pope"][1] == []
    many = [_row("vtg", i, i / 10) for i in range(10)]
    worst, best = worst_and_best(many, k=3)["vtg"]
    assert [r["index"] for r in worst] == [0, 1, 2] and [r["index"] for r in best] == [9, 8, 7]


def test_eval_writes_a_gallery_per_task(tmp_path, tiny_data_dir, tiny_weights) -> None:
    from groundinggpt.evaluation.engine import evaluate

    cfg = synthetic_eval_config(tiny_weights.ckpt, tiny_data_dir, ("rec", "vtg", "pope"), tmp_path)
    evaluate(cfg)
    run = tmp_path / "eval"
    tasks = {json.loads(line)["task"] for line in (run / "predictions.jsonl").open()}
    assert tasks == {"rec", "vtg", "pope"}
    for task in tasks:
        picture = Image.open(run / f"gallery_{task}.png")
        assert picture.width > 400 and picture.height > 300  # two rows of panels
