"""The language model side: add the modality tokens to any HF causal LM."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from groundinggpt.modalities import SPECIAL_TOKENS

# Imported for its effect: attn_implementation="sdpa_varlen" resolves for every LLM built here.
from groundinggpt.models import varlen_attention  # noqa: F401


def add_special_tokens(tokenizer, llm: nn.Module, text_tokens: Sequence[str] = ()) -> int:
    """Add the nine modality tokens to ``tokenizer`` and grow ``llm``'s embeddings to match.

    ``text_tokens`` (e.g. ``[SEG]``, ``<p>``, ``</p>`` of pixel grounding) are added as
    ordinary tokens: one id each, kept when answers are decoded.

    New input and output embedding rows start as the mean of the existing rows (docs/architecture.md), so
    the new tokens begin as an "average word" instead of random noise that would swamp the
    logits of a pretrained LLM.

    Returns:
        the number of tokens that were new to the tokenizer.
    """
    added = tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if text_tokens:
        added += tokenizer.add_tokens(list(text_tokens), special_tokens=False)
    old = llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for emb in (llm.get_input_embeddings(), llm.get_output_embeddings()):
                if emb is not None:
                    emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)
    return added
