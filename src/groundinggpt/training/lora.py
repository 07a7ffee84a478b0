"""LoRA on the LLM with peft: build it, describe it in a checkpoint, merge it back.

A LoRA run's checkpoint holds peft's key names (``llm.base_model.model.<...>.base_layer.weight``,
``...lora_A.default.weight``) and, under ``"lora"``, the settings that built them. Every
consumer of weights (``eval.py``, ``infer.py``, ``init_from``, ``merge-lora``) goes through
`load_weights`, which rebuilds the same LoRA layers on a plain model, loads strictly and merges
them with peft's own ``merge_and_unload``: the result is a plain model whose outputs equal the
unmerged one's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def apply_lora(model: nn.Module, settings: Mapping[str, Any]) -> None:
    """Wrap ``model.llm`` in peft LoRA layers (``r``, ``alpha``, ``dropout``, ``target_modules``).

    Example:
        >>> apply_lora(model, {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    """
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=int(settings.get("r", 8)),
        lora_alpha=int(settings.get("alpha", 16)),
        lora_dropout=float(settings.get("dropout", 0.05)),
        target_modules=list(settings.get("target_modules", DEFAULT_TARGETS)),
        task_type="CAUSAL_LM",
    )
    model.llm = get_peft_model(model.llm, cfg)


def lora_settings(model: nn.Module) -> dict[str, Any] | None:
    """The settings `apply_lora` needs to rebuild ``model.llm``'s LoRA layers (None: no LoRA)."""
    config = getattr(model.llm, "peft_config", {}).get("default")
    if config is None:
        return None
    return {
        "r": int(config.r),
        "alpha": int(config.lora_alpha),
        "dropout": float(config.lora_dropout),
        "target_modules": sorted(config.target_modules),
    }


def has_lora_keys(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` was saved from a model with peft LoRA layers."""
    return any(".lora_A." in k for k in state)


def merge_lora(model: nn.Module) -> None:
    """Fold ``model.llm``'s LoRA weights into the base weights; ``model.llm`` becomes plain."""
    model.llm = model.llm.merge_and_unload()
