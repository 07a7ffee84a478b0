"""Which parameters train, declared per stage in config and applied here, in one place.

``trainable = {"encoders": "frozen", "adapters": "full", "llm": "frozen" | "full" | "lora",
"new_token_embeddings": true, "pixel_decoder": "full", "pixel_encoder": "frozen"}``
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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


def _train_rows(weight: nn.Parameter, rows: Sequence[int]) -> None:
    """Let only ``rows`` of an embedding matrix learn (a gradient mask).

    The other rows get zero gradients, so they stay fixed under Adam(W) only with
    ``weight_decay=0`` (the recipe's setting); decay would still shrink them.
    """
    weight.requires_grad_(True)
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[list(rows)] = 1.0
    weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))


def modality_token_rows(model: GroundingGPT) -> list[int]:
    """Embedding rows of the tokens the model added: modality start, patch, end of every
    branch, and ``[SEG]``, ``<p>``, ``</p>`` with a pixel decoder."""
    rows = {i for ids in model.modality_token_ids.values() for i in ids}
    return sorted(rows | set(model.pixel_token_ids))


def apply_trainability(
    model: GroundingGPT,
    encoders: str = "frozen",
    adapters: str = "full",
    llm: str = "full",
    new_token_embeddings: bool | str = True,
    lora: Mapping[str, Any] | None = None,
    pixel_decoder: str = "full",
    pixel_encoder: str = "frozen",
) -> dict[str, int]:
    """Freeze or unfreeze the model's parts; returns trainable parameter counts per part.

    Args:
        model: the grounding model.
        encoders, adapters: ``"frozen"`` or ``"full"``.
        llm: ``"frozen"``, ``"full"`` or ``"lora"`` (peft adapters on the attention projections).
        new_token_embeddings: with a frozen or LoRA LLM, still train the embedding rows of the
            model's modality tokens (found by id, wherever the tokenizer put them), as in
            stage 1; ``"all"`` trains every row of the input and output embeddings (GLaMM's
            LoRA recipe trains ``embed_tokens`` and ``lm_head`` in full).
        lora: LoRA options (``r``, ``alpha``, ``dropout``, ``target_modules``).
        pixel_decoder: ``"full"`` trains the mask decoder and the ``[SEG]`` projection of a
            pixel decoder (GLaMM's recipe), ``"frozen"`` keeps them.
        pixel_encoder: SAM's image and prompt encoders: ``"frozen"`` (GLaMM, with SAM's
            pretrained weights) or ``"full"`` (a random-init toy SAM, whose frozen features
            carry nothing a mask decoder can use: experiments/2026-12-02_pixel_grounding/).
    """
    parts = {
        "encoders": encoders,
        "adapters": adapters,
        "llm": llm,
        "pixel_decoder": pixel_decoder,
        "pixel_encoder": pixel_encoder,
    }
    for part, mode in parts.items():
        if mode not in _MODES or (part != "llm" and mode == "lora"):
            raise ValueError(f"trainable.{part}={mode!r} is not one of {sorted(_MODES)}")
    for branch in model.branches.values():
        _set(branch.encoder, encoders == "full")
        branch.encoder.train(encoders == "full")
        _set(branch.adapter, adapters == "full")
    if model.pixel_decoder is not None:
        _set_pixel_decoder(model.pixel_decoder, pixel_encoder == "full", pixel_decoder == "full")
    if llm == "lora":
        _set(model.llm, False)
        apply_lora(model, lora or {})
    else:
        _set(model.llm, llm == "full")
    if llm != "full" and new_token_embeddings:
        rows = modality_token_rows(model)
        for emb in {model.llm.get_input_embeddings(), model.llm.get_output_embeddings()}:
            if emb is not None and new_token_embeddings == "all":
                emb.weight.requires_grad_(True)  # every row (GLaMM's embed_tokens, lm_head)
            elif emb is not None and rows:
                _train_rows(emb.weight, rows)
    counts = trainable_counts(model)
    log.info("trainable parameters: %s", counts)
    return counts


def _set_pixel_decoder(decoder: nn.Module, encoder: bool, decoder_part: bool) -> None:
    sam = decoder.sam
    for module in (sam.vision_encoder, sam.prompt_encoder, sam.shared_image_embedding):
        _set(module, encoder)
    sam.vision_encoder.train(encoder)
    _set(sam.mask_decoder, decoder_part)
    _set(decoder.seg_projection, decoder_part)


def trainable_counts(model: GroundingGPT) -> dict[str, int]:
    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    counts = {f"encoder.{k}": n(b.encoder) for k, b in model.branches.items()}
    counts |= {f"adapter.{k}": n(b.adapter) for k, b in model.branches.items()}
    counts["llm"] = n(model.llm)
    if model.pixel_decoder is not None:
        counts["pixel_decoder"] = n(model.pixel_decoder)
    return counts
