"""Build the configured model and load its weights (eval.py, infer.py, the demo, merge-lora)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from groundinggpt.models.grounding_model import GroundingGPT
from groundinggpt.training.checkpoint import load_weights


def build_model(cfg: DictConfig) -> tuple[GroundingGPT, Any]:
    """The model and tokenizer that ``cfg`` describes, with the weights of ``cfg.ckpt_path``.

    ``ckpt_path`` is a Lightning ``.ckpt`` of a training run or a ``.safetensors`` file (e.g.
    the converted release); missing or unexpected keys fail, so a checkpoint of another
    architecture never evaluates silently with random layers.

    Example:
        >>> model, tokenizer = build_model(compose("eval", ["ckpt_path=run/checkpoints/last.ckpt"]))
    """
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
    load_weights(model, cfg.ckpt_path)
    return model, tokenizer


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

    cfg = OmegaConf.load(config or find_run_config(ckpt))
    cfg.ckpt_path = str(ckpt)
    model, _ = build_model(cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save(state, out, {"merged_from": str(ckpt)})
    return len(state)
