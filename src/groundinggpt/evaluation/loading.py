"""Build the configured model and load the weights to evaluate (shared by eval.py and infer.py)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

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
