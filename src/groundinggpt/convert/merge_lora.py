"""Merge a LoRA run's checkpoint into plain model weights (one ``.safetensors`` file).

Example:
    python -m groundinggpt.convert merge-lora runs/s2/checkpoints/last.ckpt \\
        --out runs/s2/merged.safetensors

The model is rebuilt from the run's own config (``<run>/.hydra/config.yaml``, found from the
checkpoint's folder, or ``--config``), the LoRA layers are rebuilt from the settings the
checkpoint carries, loaded strictly and merged by peft (``merge_and_unload``). The output has
the plain model's keys: ``ckpt_path=`` (eval, infer) and ``init_from=`` load it like any
converted checkpoint, without peft.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("groundinggpt.convert")


def find_run_config(ckpt: Path) -> Path:
    """``.hydra/config.yaml`` of the run that wrote ``ckpt`` (its folder or a parent)."""
    for folder in [ckpt.parent, *ckpt.parents]:
        candidate = folder / ".hydra" / "config.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no .hydra/config.yaml above {ckpt}: pass --config")


def merge_lora_checkpoint(ckpt: Path, out: Path, config: Path | None = None) -> int:
    """Write ``ckpt``'s model, LoRA merged, to ``out``; returns the number of tensors."""
    from groundinggpt.convert.io import save
    from groundinggpt.evaluation.loading import build_model

    cfg = OmegaConf.load(config or find_run_config(ckpt))
    cfg.ckpt_path = str(ckpt)
    model, _ = build_model(cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save(state, out, {"merged_from": str(ckpt)})
    return len(state)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m groundinggpt.convert merge-lora", description=__doc__.split("\n")[0]
    )
    p.add_argument("ckpt", type=Path, help="a LoRA run's Lightning checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.add_argument("--config", type=Path, help="the run's config (default: found from ckpt)")
    args = p.parse_args(argv)
    n = merge_lora_checkpoint(args.ckpt, args.out, args.config)
    print(f"wrote {n} merged tensors to {args.out}")
