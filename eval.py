"""Evaluate a checkpoint on a benchmark: `python eval.py benchmark=NAME ckpt_path=CKPT`.

Writes `metrics.json` and `predictions.jsonl` into the run dir (see configs/eval.yaml).
"""

import hydra
from omegaconf import DictConfig

from groundinggpt.evaluation.engine import evaluate


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
