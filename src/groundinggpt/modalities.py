"""Modality names and their special tokens: the vocabulary every layer of the project shares.

This module imports nothing from the project, so models, data, training and evaluation can
all depend on it (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality appears in text and in the token sequence.

    Args:
        record_key: key of the media path in a data record (``image``, ``video``, ``sound``).
        placeholder: the marker in prompts (``<image>``).
        start, patch, end: the special tokens the placeholder expands into.
        num_tokens: how many ``patch`` tokens one media item becomes (the adapter's output length).
    """

    record_key: str
    placeholder: str
    start: str
    patch: str
    end: str
    num_tokens: int


# Record key and placeholder per modality as in the released GroundingGPT data.
_SPECIAL = {
    "image": ("image", "<image>", "<im_start>", "<im_patch>", "<im_end>"),
    "video": ("video", "<video>", "<vi_start>", "<vi_patch>", "<vi_end>"),
    "audio": ("sound", "<sound>", "<so_start>", "<so_patch>", "<so_end>"),
}
SPECIAL_TOKENS = [tok for spec in _SPECIAL.values() for tok in spec[2:]]
# Pixel grounding (GLaMM): each ``[SEG]`` in an answer becomes one mask; ``<p>...</p>`` marks
# the phrase a mask grounds in a grounded caption. Added as ordinary tokens (not special
# ones), so decoding keeps them in the answer text.
SEG_TOKEN = "[SEG]"
PIXEL_TOKENS = [SEG_TOKEN, "<p>", "</p>"]
# Region input (GLaMM): each ``<region>`` in a prompt stands for one box of the record's image
# (``"regions"``); its embedding is replaced by the region encoder's output for that box.
REGION_TOKEN = "<region>"


def modality_specs(num_tokens: Mapping[str, int]) -> dict[str, ModalitySpec]:
    """Specs for the modalities in ``num_tokens`` (``{"image": 576, "video": 64, "audio": 8}``)."""
    unknown = set(num_tokens) - set(_SPECIAL)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {sorted(_SPECIAL)}")
    return {m: ModalitySpec(*_SPECIAL[m], num_tokens=int(n)) for m, n in num_tokens.items()}


__all__ = [
    "PIXEL_TOKENS",
    "REGION_TOKEN",
    "SEG_TOKEN",
    "SPECIAL_TOKENS",
    "ModalitySpec",
    "modality_specs",
]
