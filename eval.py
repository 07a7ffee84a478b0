"""Evaluate a checkpoint on a benchmark: `python eval.py benchmark=NAME ckpt_path=CKPT`.

Writes `metrics.json` and `predictions.jsonl` into the run dir (see configs/eval.yaml).
"""

from groundinggpt.cli import eval_main as main

if __name__ == "__main__":
    main()
