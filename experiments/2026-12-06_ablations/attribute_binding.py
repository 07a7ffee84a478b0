"""Does a checkpoint read the object the question names? Attribute questions and existence,
answered by generation, split by the number of objects in the image.

    python experiments/2026-12-06_ablations/attribute_binding.py CKPT DATA_DIR [N]

Answers the first N (default 200) training records of ``image_qa`` ("What colour is the
square?" / "What shape is the red object?"), ``image_verify`` ("Is the square red?") and
``text_pope`` (POPE with the scene given as words, no image) where the data has them, and
``pope``, with `GroundingChat` (greedy, as infer.py) and prints accuracy (of the answer
word; of the yes/no decision, in any answer form) per (objects in the image, question kind).
On a one-object image an attribute question is answered by describing the only object; on a
two-object image only by finding the named one (chance ~0.5 when the two differ).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir

from groundinggpt.build import build_model
from groundinggpt.grounding.format import parse_yes_no

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def main() -> None:
    ckpt, data = sys.argv[1], Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("infer", [f"ckpt_path={ckpt}", f"paths.data_dir={data}"])
    model, tokenizer = build_model(cfg, "ckpt_path")
    chat = hydra.utils.instantiate(cfg.assistant, model=model, tokenizer=tokenizer)
    for task in ("image_qa", "image_verify", "pope", "text_pope"):
        path = data / "synthetic" / "annotations" / f"{task}_train.json"
        if not path.is_file():
            continue
        counts: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        for record in json.loads(path.read_text())[:n]:
            image = record.get("image")  # text_pope: none, the scene is in the question
            chat.set_media(image=str(data / "synthetic" / image) if image else None)
            question = record["conversations"][0]["value"].split("\n")[-1]
            reference = record["conversations"][1]["value"].strip().lower()
            answer = chat.ask(question).text.strip().lower()
            if task == "image_qa":  # colour/shape asked; the answer word must match
                kind, hit = question.split()[1], answer == reference
            else:  # yes/no: the decision must match (whatever the answer form)
                truth = parse_yes_no(reference)
                kind, hit = ("yes." if truth else "no."), parse_yes_no(answer) is truth
            key = (len(record["meta"]["objects"]), kind)
            counts[key][0] += hit
            counts[key][1] += 1
        for (objects, kind), (hit, total) in sorted(counts.items()):
            print(f"{task:8s} objects={objects} {kind:7s} {hit:3d}/{total:3d} = {hit / total:.2f}")


if __name__ == "__main__":
    main()
