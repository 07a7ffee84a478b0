"""The released GroundingGPT-7B checkpoint (``zwli/GroundingGPT``, "LEGO") -> this project's keys.

The release is a ``LEGOLlamaForCausalLM`` state dict: the Llama under ``model.*``/``lm_head.*``
(vocabulary 32009 = Vicuna's 32000 + nine modality tokens) and every multimodal part below
``model.``:

======================================== ====================================================
released key                             this project (`GroundingGPT` state dict)
======================================== ====================================================
``model.mm_vision_projector.{0,2}.*``    ``branches.image.adapter.{fc1,fc2}.*``
``model.visual_encoder.*``               ``branches.video.encoder.visual_encoder.*``
``model.ln_vision.*``                    ``branches.video.encoder.ln_vision.*``
``model.query_tokens``                   ``branches.video.encoder.qformer.query_tokens``
``model.Qformer.bert.*`` (LAVIS)         ``branches.video.encoder.qformer.model.*`` (HF)
``model.video_frame_position_embedding`` ``branches.video.adapter.frame_position_embedding``
``model.video_query_tokens``             ``branches.video.adapter.qformer.query_tokens``
``model.video_Qformer.bert.*``           ``branches.video.adapter.qformer.model.*``
``model.llama_proj.*``                   ``branches.video.adapter.proj.*``
``model.audio_encoder.*`` (ImageBind)    ``branches.audio.encoder.*`` (audio branch only)
``model.audio_position_embedding.*``     ``branches.audio.adapter.clip_position_embedding.*``
``model.audio_query_tokens``             ``branches.audio.adapter.qformer.query_tokens``
``model.audio_Qformer.bert.*``           ``branches.audio.adapter.qformer.model.*``
``model.audio_llama_proj.*``             ``branches.audio.adapter.proj.*``
``model.{embed_tokens,layers,norm}.*``   ``llm.model.*``; ``lm_head.*`` -> ``llm.lm_head.*``
======================================== ====================================================

The CLIP vision tower is *not* in the release (LEGO keeps it in a Python list, so it is never
registered nor saved): it comes from ``openai/clip-vit-large-patch14-336`` (`clip_vision_rules`).

Token rows: LEGO adds ``<im_patch>`` first, then ``<im_start> <im_end>``, then video and sound
tokens patch-first (`RELEASED_TOKEN_ORDER`); this project adds the nine tokens in
:data:`~groundinggpt.data.conversation.SPECIAL_TOKENS` order (start, patch, end). The rows of
``embed_tokens`` and ``lm_head`` are permuted accordingly, so a token string keeps its trained
embedding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from groundinggpt.convert.components import (
    LOGIT_SCALE_KEY,
    check_imagebind_logit_scale,
    clip_vision_rules,
    eva_rules,
    imagebind_audio_rules,
    qformer_rules,
)
from groundinggpt.convert.mapping import Conversion, KeyRules
from groundinggpt.modalities import SPECIAL_TOKENS

# LEGO.initialize_vision_tokenizer then initialize_video_sound_tokenizer, flags of the release.
RELEASED_TOKEN_ORDER = [
    "<im_patch>",
    "<im_start>",
    "<im_end>",
    "<vi_patch>",
    "<vi_start>",
    "<vi_end>",
    "<so_patch>",
    "<so_start>",
    "<so_end>",
]
TOKEN_ROW_KEYS = ("llm.model.embed_tokens.weight", "llm.lm_head.weight")
_V, _A = "branches.video.", "branches.audio."


def released_rules(vit_depth: int = 39) -> KeyRules:
    """Key rules for a released GroundingGPT state dict (see the module table)."""
    return (
        KeyRules()
        .rename(r"model\.mm_vision_projector\.0\.(.+)$", r"branches.image.adapter.fc1.\1")
        .rename(r"model\.mm_vision_projector\.2\.(.+)$", r"branches.image.adapter.fc2.\1")
        .drop(r"model\.vision_tower\.", "CLIP tower, converted by the CLIP rules")
        .extend(eva_rules("model.visual_encoder.", _V + "encoder.visual_encoder.", vit_depth))
        .rename(r"model\.ln_vision\.(.+)$", _V + r"encoder.ln_vision.\1")
        .rename(r"model\.query_tokens$", _V + "encoder.qformer.query_tokens")
        .extend(qformer_rules("model.Qformer.bert.", _V + "encoder.qformer.model."))
        .rename(
            r"model\.video_frame_position_embedding\.(.+)$",
            _V + r"adapter.frame_position_embedding.\1",
        )
        .rename(r"model\.video_query_tokens$", _V + "adapter.qformer.query_tokens")
        .extend(qformer_rules("model.video_Qformer.bert.", _V + "adapter.qformer.model."))
        .rename(r"model\.llama_proj\.(.+)$", _V + r"adapter.proj.\1")
        .extend(imagebind_audio_rules("model.audio_encoder.", _A + "encoder."))
        .rename(
            r"model\.audio_position_embedding\.(.+)$", _A + r"adapter.clip_position_embedding.\1"
        )
        .rename(r"model\.audio_query_tokens$", _A + "adapter.qformer.query_tokens")
        .extend(qformer_rules("model.audio_Qformer.bert.", _A + "adapter.qformer.model."))
        .rename(r"model\.audio_llama_proj\.(.+)$", _A + r"adapter.proj.\1")
        .drop(
            r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$",
            "buffer recomputed by transformers",
        )
        .rename(r"model\.(embed_tokens|layers|norm)\.(.+)$", r"llm.model.\1.\2")
        .rename(r"lm_head\.(.+)$", r"llm.lm_head.\1")
    )


def released_token_ids(folder: str | Path | None, vocab_size: int) -> dict[str, int]:
    """Ids of the nine tokens in the release: from its tokenizer files, else LEGO's order.

    Reads ``added_tokens.json``, ``tokenizer_config.json`` (``added_tokens_decoder``) or
    ``tokenizer.json`` (``added_tokens``) when ``folder`` has them.
    """
    found: dict[str, int] = {}
    folder = Path(folder) if folder is not None else None
    if folder is not None and folder.is_dir():
        found = _ids_from_tokenizer_files(folder)
    if not found:
        base = vocab_size - len(RELEASED_TOKEN_ORDER)
        return {tok: base + i for i, tok in enumerate(RELEASED_TOKEN_ORDER)}
    missing = set(SPECIAL_TOKENS) - found.keys()
    if missing:
        raise ValueError(f"{folder}: tokenizer files lack the tokens {sorted(missing)}")
    return {tok: found[tok] for tok in SPECIAL_TOKENS}


def _ids_from_tokenizer_files(folder: Path) -> dict[str, int]:
    added = folder / "added_tokens.json"
    if added.is_file():
        return {k: int(v) for k, v in json.loads(added.read_text()).items()}
    config = folder / "tokenizer_config.json"
    if config.is_file():
        decoder = json.loads(config.read_text()).get("added_tokens_decoder", {})
        ids = {v["content"]: int(k) for k, v in decoder.items()}
        if set(SPECIAL_TOKENS) <= ids.keys():
            return ids
    tok_json = folder / "tokenizer.json"
    if tok_json.is_file():
        return {
            t["content"]: int(t["id"]) for t in json.loads(tok_json.read_text())["added_tokens"]
        }
    return {}


def default_target_token_ids(vocab_size: int) -> dict[str, int]:
    """Ids this project gives the tokens: appended to the base vocabulary, SPECIAL_TOKENS order."""
    base = vocab_size - len(SPECIAL_TOKENS)
    return {tok: base + i for i, tok in enumerate(SPECIAL_TOKENS)}


def permute_token_rows(
    weight: torch.Tensor, source_ids: Mapping[str, int], target_ids: Mapping[str, int]
) -> torch.Tensor:
    """Move each special token's row from its released id to its id in this project.

    Raises:
        ValueError: when the target ids are not a permutation of the source ids.
    """
    if sorted(source_ids.values()) != sorted(target_ids.values()) or set(source_ids) != set(
        target_ids
    ):
        raise ValueError(
            f"token ids {dict(source_ids)} and {dict(target_ids)} are not a permutation"
        )
    if max(source_ids.values()) >= weight.shape[0]:
        raise ValueError(f"token id past the {weight.shape[0]} embedding rows")
    out = weight.clone()  # (V, D)
    for tok, new in target_ids.items():
        out[new] = weight[source_ids[tok]]
    return out


def convert_released(
    released: Mapping[str, torch.Tensor],
    clip: Mapping[str, torch.Tensor] | None = None,
    released_ids: Mapping[str, int] | None = None,
    target_ids: Mapping[str, int] | None = None,
    vit_depth: int = 39,
) -> Conversion:
    """Convert a released GroundingGPT state dict (plus CLIP weights) to our keys.

    Args:
        released: the release's tensors (all shards merged, keys as stored).
        clip: HF CLIP weights (any layout `clip_vision_rules` reads) for the image encoder the
            release lacks.
        released_ids: the nine tokens' ids in the release (default: LEGO's order at the end).
        target_ids: their ids in this project (default: SPECIAL_TOKENS order at the end).
        vit_depth: EVA blocks the video encoder keeps.

    Raises:
        ValueError: on keys of unknown layout, a wrong ImageBind logit scale, or token ids
            that are not a permutation.

    Example:
        >>> conv = convert_released(read_checkpoint("GroundingGPT/"), read_checkpoint("clip/"))
        >>> conv.check_complete("release"); print(conv.summary())
    """
    check_imagebind_logit_scale(released, "model.audio_encoder." + LOGIT_SCALE_KEY, 20.0)
    conversion = released_rules(vit_depth).apply(released)
    if clip is not None:
        conversion.update(clip_vision_rules("", "branches.image.encoder.model.").apply(clip))
    tower = {
        k.removeprefix("model.vision_tower."): v
        for k, v in released.items()
        if k.startswith("model.vision_tower.")
    }
    if tower:  # LEGO never saves it; a re-saved release might
        conversion.update(clip_vision_rules("", "branches.image.encoder.model.").apply(tower))
    vocab = conversion.state[TOKEN_ROW_KEYS[0]].shape[0]
    source = released_ids or released_token_ids(None, vocab)
    target = target_ids or default_target_token_ids(vocab)
    for key in TOKEN_ROW_KEYS:
        if key in conversion.state:
            conversion.state[key] = permute_token_rows(conversion.state[key], source, target)
    return conversion


# What GroundingGPT-7B's config.json records (LEGOConfig fields) and model=groundinggpt_7b builds.
REFERENCE_CONFIG = {
    "vocab_size": 32009,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "mm_vision_select_layer": -2,
    "mm_vision_hidden_size": 1024,
    "mm_use_im_start_end": True,
    "num_query_token": 32,
    "max_frame": 64,
    "video_token_len": 64,
    "sound_token_len": 8,
}


def check_released_config(folder: str | Path) -> list[str]:
    """Differences between the release's ``config.json`` and the architecture we build.

    Returns:
        one line per differing field (empty when it matches or there is no config.json).
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        return []
    config = json.loads(path.read_text())
    return [
        f"{key}: release {config[key]!r}, model=groundinggpt_7b {value!r}"
        for key, value in REFERENCE_CONFIG.items()
        if key in config and config[key] != value
    ]


def adapter_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trainable adapters only (``branches.*.adapter.*``), for sharing."""
    return {k: v for k, v in state.items() if k.startswith("branches.") and ".adapter." in k}


__all__ = [
    "REFERENCE_CONFIG",
    "RELEASED_TOKEN_ORDER",
    "check_released_config",
    "adapter_state",
    "convert_released",
    "default_target_token_ids",
    "permute_token_rows",
    "released_rules",
    "released_token_ids",
]
