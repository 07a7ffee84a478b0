"""Which parameters train, declared per stage in config and applied here, in one place.

``trainable = {"encoders": "frozen", "adapters": "full", "llm": "frozen" | "full" | "lora",
"new_token_embeddings": true}``
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from groundinggpt.models.grounding_model import GroundingGPT
from groundinggpt.training.lora import apply_lora

log = logging.getLogger(__name__)
_MODES = {"frozen", "full", "lora"}


def _set(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _train_rows_from(weight: nn.Parameter, first_row: int) -> None:
    """Let only rows ``first_row:`` of an embedding matrix learn (a gradient mask).

    The other rows get zero gradients, so they stay fixed under Adam(W) only with
    ``weight_decay=0`` (the recipe's setting); decay would still shrink them.
    """
    weight.requires_grad_(True)
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[first_row:] = 1.0
    weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))


def apply_trainability(
    model: GroundingGPT,
    encoders: str = "frozen",
    adapters: str = "full",
    llm: str = "full",
    new_token_embeddings: bool = True,
    num_new_tokens: int = 0,
    lora: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Freeze or unfreeze the model's parts; returns trainable parameter counts per part.

    Args:
        model: the grounding model.
        encoders, adapters: ``"frozen"`` or ``"full"``.
        llm: ``"frozen"``, ``"full"`` or ``"lora"`` (peft adapters on the attention projections).
        new_token_embeddings: with a frozen or LoRA LLM, still train the embedding rows of the
            ``num_new_tokens`` tokens added last (the modality tokens), as in stage 1.
        num_new_tokens: how many rows at the end of the vocabulary are new.
        lora: LoRA options (``r``, ``alpha``, ``dropout``, ``target_modules``).
    """
    for part, mode in {"encoders": encoders, "adapters": adapters, "llm": llm}.items():
        if mode not in _MODES or (part != "llm" and mode == "lora"):
            raise ValueError(f"trainable.{part}={mode!r} is not one of {sorted(_MODES)}")
    for branch in model.branches.values():
        _set(branch.encoder, encoders == "full")
        branch.encoder.train(encoders == "full")
        _set(branch.adapter, adapters == "full")
    if llm == "lora":
        _set(model.llm, False)
        apply_lora(model, lora or {})
    else:
        _set(model.llm, llm == "full")
    if llm != "full" and new_token_embeddings and num_new_tokens > 0:
        vocab = model.llm.get_input_embeddings().weight.shape[0]
        for emb in {model.llm.get_input_embeddings(), model.llm.get_output_embeddings()}:
            if emb is not None:
                _train_rows_from(emb.weight, vocab - num_new_tokens)
    counts = trainable_counts(model)
    log.info("trainable parameters: %s", counts)
    return counts


def trainable_counts(model: GroundingGPT) -> dict[str, int]:
    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    counts = {f"encoder.{k}": n(b.encoder) for k, b in model.branches.items()}
    counts |= {f"adapter.{k}": n(b.adapter) for k, b in model.branches.items()}
    counts["llm"] = n(model.llm)
    return counts
