"""Does the model pick the object the question names? Splits eval.py's predictions by scene.

    python experiments/2026-12-06_default_learns/object_choice.py RUN/predictions.jsonl \
        [--annotations data/synthetic/annotations]

For REC and sound localisation on two-object scenes: how often the predicted box hits the
named object (IoU >= 0.5) and how often it hits the other one. A model that localises "an
object" without reading the question hits both equally often. For POPE: the "yes" rate per
number of objects and per true answer (a model that ignores the question answers alike).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from torchvision.ops import box_iou


def iou(a, b) -> float:
    return float(
        box_iou(torch.tensor([a], dtype=torch.float), torch.tensor([b], dtype=torch.float))
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("predictions")
    p.add_argument("--annotations", default="data/synthetic/annotations")
    args = p.parse_args()
    records = {}
    for task in ("rec", "sl", "pope"):
        for split in ("test", "val"):
            path = Path(args.annotations) / f"{task}_{split}.json"
            if path.is_file():
                records.update({r["id"]: r for r in json.loads(path.read_text())})
    rows = defaultdict(list)
    for line in Path(args.predictions).read_text().splitlines():
        pred = json.loads(line)
        record = records.get(pred["id"])
        if record is None or pred.get("skipped"):
            continue
        objects = record["meta"].get("objects", [])
        if pred["task"] in ("rec", "sl"):
            box = pred["prediction"]
            named = pred["score"] >= 0.5
            others = [o["box"] for o in objects if iou(o["box"], pred["target"]) < 0.99]
            other = bool(box) and any(iou(box, o) >= 0.5 for o in others)
            rows[(pred["task"], len(objects), "named object hit")].append(named)
            rows[(pred["task"], len(objects), "other object hit")].append(other)
        elif pred["task"] == "pope":
            answer = "present" if record["meta"]["label"] else "absent"
            said_yes = str(pred["output"]).strip().lower().startswith("yes")
            rows[("pope", len(objects), f"yes rate, object {answer}")].append(said_yes)
    print("| task | objects in scene | rate | n |")
    print("|---|---|---|---|")
    for (task, n, what), values in sorted(rows.items()):
        print(f"| {task} | {n} | {what}: {sum(values) / len(values):.3f} | {len(values)} |")


if __name__ == "__main__":
    main()
