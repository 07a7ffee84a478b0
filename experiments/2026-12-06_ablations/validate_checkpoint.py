"""Validate a finished run's checkpoint on another validation set (no training).

    python experiments/2026-12-06_ablations/validate_checkpoint.py CKPT OUT.json [OVERRIDE ...]

Composes ``train.yaml`` with the overrides (e.g. ``experiment=stage2_fine
hparams_search=replay_ablation paths.data_dir=...``: the replay ablation's validation sets,
with the held-out stage-1 captions), builds the module, data and trainer as ``train.py`` does
and runs one validation pass of ``CKPT``; writes every logged ``val/*`` number to OUT.json.
Used here to give the replay ablation's default arm (``data.replay_ratio=0.05``, the three
default seeds already trained) the caption losses the ablation's other arms log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from groundinggpt.train import build

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def main() -> None:
    ckpt, out, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out.parent / out.stem}", *overrides])
    module, dm, trainer = build(cfg)
    (metrics,) = trainer.validate(module, datamodule=dm, ckpt_path=ckpt)
    out.write_text(json.dumps({"ckpt": ckpt, **metrics}, indent=1, sort_keys=True) + "\n")
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
