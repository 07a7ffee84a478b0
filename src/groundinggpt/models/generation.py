"""Text generation of a grounding model: the one path of validation, eval.py, infer.py, the demo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from groundinggpt.models.grounding_model import GroundingGPT, region_inputs


def generate_tokens(
    model: GroundingGPT,
    tokenizer,
    batch: Mapping[str, Any],
    generation: Mapping[str, Any] | None = None,
    features: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The new token ids ``(B, T_new)`` for a batch of left-padded prompts (see
    `generate_answers`); finished answers are padded with ``tokenizer.pad_token_id``."""
    if "region_boxes" in batch:
        features = prompt_features(model, batch, features)
    return model.generate(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["media"],
        features=features,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **dict(generation or {}),
    )


def prompt_features(
    model: GroundingGPT,
    batch: Mapping[str, Any],
    features: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``features`` (encoded here when None) with only the region embeddings of the boxes in
    the prompts (``batch["region_in_prompt"]``): regions of later turns are not generated from.
    """
    if features is None:
        features = model.encode(batch["media"], **region_inputs(batch))
    features = dict(features)
    if "region" in features:
        keep = batch["region_in_prompt"].to(features["region"].device)
        features["region"] = features["region"][keep]
    return features


def decode_answers(tokenizer, tokens: torch.Tensor) -> list[str]:
    """Answer texts of generated ids (special tokens dropped; ``[SEG]``, ``<p>`` kept)."""
    return [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def generate_answers(
    model: GroundingGPT,
    tokenizer,
    batch: Mapping[str, Any],
    generation: Mapping[str, Any] | None = None,
    features: Mapping[str, torch.Tensor] | None = None,
) -> list[str]:
    """Decode answers to a batch of left-padded prompts (KV cache, greedy unless told otherwise).

    The one generation path of validation, ``eval.py`` and ``infer.py``.

    Args:
        model: the grounding model.
        tokenizer: its tokenizer (pad/eos ids, decoding).
        batch: ``prompt_ids`` and ``prompt_mask`` (B, T) left-padded, ``media`` per modality.
        generation: kwargs of ``generate`` (``max_new_tokens``, ``do_sample``...).
        features: already encoded media (skips the encoders).

    Example:
        >>> generate_answers(model, tok, collate([sample]), {"max_new_tokens": 16})
        ['[0.120, 0.300, 0.560, 0.710]']
    """
    return decode_answers(tokenizer, generate_tokens(model, tokenizer, batch, generation, features))
