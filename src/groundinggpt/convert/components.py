"""Key rules from the original component checkpoints to this project's modules.

Each function returns :class:`~groundinggpt.convert.mapping.KeyRules` for one component,
reading keys below ``src`` and writing keys below ``dst``:

- `qformer_rules`: a LAVIS BERT Q-Former (BLIP-2, Video-LLaMA, GroundingGPT) -> Hugging Face
  ``Blip2QFormerModel``. LAVIS names the attention ``*.attention.self.*`` and the
  cross-attention ``*.crossattention.self.*``, HF ``*.attention.attention.*``; LAVIS applies
  ``bert.embeddings.LayerNorm`` to the queries, HF calls it ``layernorm``. Text-only parts
  (word/position embeddings, the text FFN ``intermediate``/``output``, the LM head ``cls``)
  never touch the query-only path and are dropped with that reason.
- `eva_rules`: LAVIS EVA-CLIP-g keys -> timm ``Eva`` keys (identical names; blocks past the
  encoder's depth are dropped, BLIP-2 uses 39 of EVA-CLIP-g's 40).
- `hf_blip2_vision_rules`: HF ``Blip2VisionModel`` -> timm ``Eva`` (its ``post_layernorm`` is
  LAVIS's ``ln_vision``).
- `imagebind_audio_rules`: ImageBind's audio branch; other modalities dropped.
- `clip_vision_rules`: HF ``CLIPModel``/``CLIPVisionModel`` (with or without the
  ``vision_model.`` prefix) -> ``CLIPVisionModel``.

`pretrained_video_encoder` and `pretrained_audio_encoder` (the ``_target_`` of
``configs/model/groundinggpt_7b_pretrained.yaml``) build an encoder and load its component
checkpoint through `blip2_video_encoder_conversion` / `imagebind_audio_rules` and
`load_conversion`.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from groundinggpt.convert.io import read_checkpoint, resolve
from groundinggpt.convert.mapping import Conversion, KeyRules
from groundinggpt.models.encoders import BlipVideoEncoder
from groundinggpt.models.imagebind_audio import ImageBindAudioEncoder

log = logging.getLogger(__name__)

# Keys of a BLIP-2 checkpoint (LAVIS or HF layout) that the video encoder reads.
BLIP2_VIDEO_PREFIXES = (
    "visual_encoder.",
    "ln_vision.",
    "Qformer.",
    "query_tokens",
    "vision_model.",
    "qformer.",
)
TEXT_ONLY = "Q-Former text-side weight (the query-only path never uses it)"
NOT_USED = "not part of GroundingGPT"


def qformer_rules(src: str, dst: str) -> KeyRules:
    """LAVIS ``BertModel`` keys below ``src`` (e.g. ``Qformer.bert.``) -> HF Q-Former at ``dst``.

    Example:
        >>> qformer_rules("Qformer.bert.", "qformer.model.").target(
        ...     "Qformer.bert.encoder.layer.0.crossattention.self.key.weight")
        ('qformer.model.encoder.layer.0.crossattention.attention.key.weight', '')
    """
    s, layer = re.escape(src), re.escape(src) + r"encoder\.layer\.(\d+)\."
    out = dst + r"encoder.layer.\1."
    return (
        KeyRules()
        .rename(s + r"embeddings\.LayerNorm\.(weight|bias)$", dst + r"layernorm.\1")
        .drop(s + r"embeddings\.(word_embeddings|position_embeddings|position_ids)", TEXT_ONLY)
        .rename(layer + r"(attention|crossattention)\.self\.(.+)$", out + r"\2.attention.\3")
        .rename(layer + r"(attention|crossattention)\.output\.(.+)$", out + r"\2.output.\3")
        .rename(layer + r"(intermediate_query|output_query)\.(.+)$", out + r"\2.\3")
        .drop(layer + r"(intermediate|output)\.", TEXT_ONLY)
        .drop(s + r"pooler\.", TEXT_ONLY)
    )


def eva_rules(src: str, dst: str, depth: int) -> KeyRules:
    """LAVIS EVA ViT keys below ``src`` -> timm ``Eva`` at ``dst``, keeping ``depth`` blocks."""
    s = re.escape(src)
    kept = "|".join(str(i) for i in range(depth))
    return (
        KeyRules()
        .rename(s + r"(cls_token|pos_embed)$", dst + r"\1")
        .rename(s + r"(patch_embed\.proj\.(?:weight|bias))$", dst + r"\1")
        .rename(s + rf"(blocks\.(?:{kept})\..+)$", dst + r"\1")
        .drop(s + r"blocks\.\d+\.", f"EVA block past the first {depth} (BLIP-2 drops it)")
        .drop(s + r"(norm|fc_norm|head)\.", "EVA final norm/head (BLIP-2 reads the last block)")
    )


def hf_blip2_vision_rules(src: str, dst: str, ln_dst: str) -> KeyRules:
    """HF ``Blip2VisionModel`` keys below ``src`` -> timm ``Eva`` at ``dst``, ``ln_vision``."""
    s, layer = re.escape(src), re.escape(src) + r"encoder\.layers\.(\d+)\."
    blk = dst + r"blocks.\1."
    return (
        KeyRules()
        .rename(s + r"embeddings\.class_embedding$", dst + "cls_token")
        .rename(s + r"embeddings\.position_embedding$", dst + "pos_embed")
        .rename(s + r"embeddings\.patch_embedding\.(weight|bias)$", dst + r"patch_embed.proj.\1")
        .rename(layer + r"layer_norm1\.(.+)$", blk + r"norm1.\2")
        .rename(layer + r"layer_norm2\.(.+)$", blk + r"norm2.\2")
        .rename(layer + r"self_attn\.qkv\.weight$", blk + r"attn.qkv.weight")
        .rename(layer + r"self_attn\.(q_bias|v_bias)$", blk + r"attn.\2")
        .rename(layer + r"self_attn\.projection\.(.+)$", blk + r"attn.proj.\2")
        .rename(layer + r"mlp\.(.+)$", blk + r"mlp.\2")
        .rename(s + r"post_layernorm\.(weight|bias)$", ln_dst + r"\1")
    )


def split_hf_qkv_bias(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace HF's fused ``self_attn.qkv.bias`` by EVA's ``q_bias``/``v_bias``.

    The key part is dropped: adding the same vector to every key shifts all attention logits
    of a query by one constant, which softmax ignores, so the output is unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("self_attn.qkv.bias"):
            q, _, v = value.chunk(3)
            out[key.replace("qkv.bias", "q_bias")] = q
            out[key.replace("qkv.bias", "v_bias")] = v
        else:
            out[key] = value
    return out


LOGIT_SCALE_KEY = "modality_postprocessors.audio.1.log_logit_scale"

# ImageBind keys (audio branch) -> our keys; matched as prefixes, first match wins.
IMAGEBIND_AUDIO_KEY_PREFIXES: dict[str, str] = {
    "modality_preprocessors.audio.rgbt_stem.proj.": "patch_embed.proj.",
    "modality_preprocessors.audio.rgbt_stem.norm_layer.": "patch_embed.norm.",
    "modality_preprocessors.audio.cls_token": "cls_token",
    "modality_preprocessors.audio.pos_embedding_helper.pos_embed": "pos_embed",
    "modality_trunks.audio.blocks.": "blocks.",
    "modality_heads.audio.0.": "head_norm.",
    "modality_heads.audio.2.": "head_proj.",
}


def convert_imagebind_audio_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Pick the audio branch out of a full ImageBind state dict, renamed to our keys.

    Keys of other modalities and the fixed logit-scale buffer are dropped.

    Raises:
        ValueError: when the state dict holds no audio-branch key.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in IMAGEBIND_AUDIO_KEY_PREFIXES.items():
            if key.startswith(old):
                converted[new + key[len(old) :]] = value
                break
    if not converted:
        raise ValueError("state dict has no ImageBind audio keys ('modality_*.audio.*')")
    return converted


def imagebind_audio_rules(src: str, dst: str) -> KeyRules:
    """ImageBind keys below ``src`` -> our ``ImageBindAudioEncoder`` at ``dst``."""
    s = re.escape(src)
    rules = KeyRules()
    for old, new in IMAGEBIND_AUDIO_KEY_PREFIXES.items():
        rules.rename(s + re.escape(old) + "(.*)$", dst + new + r"\1")
    return rules.drop(
        s + r"modality_postprocessors\.audio\.1\.log_logit_scale$",
        "ImageBind audio logit scale (a fixed 20, checked)",
    ).drop(s + r"modality_\w+\.(?!audio\.)", "ImageBind branch of another modality")


def check_imagebind_logit_scale(state: Mapping[str, torch.Tensor], key: str, scale: float) -> None:
    """Fail when the checkpoint's fixed audio logit scale is not the one the encoder applies."""
    if key in state:
        found = float(state[key].float().exp().clamp(max=100))
        if not math.isclose(found, scale, rel_tol=1e-3):
            raise ValueError(f"{key}: logit scale {found:.4g}, the encoder applies {scale}")


def clip_vision_rules(src: str, dst: str) -> KeyRules:
    """HF CLIP vision keys below ``src`` -> ``CLIPVisionModel`` at ``dst``.

    Reads three layouts, told apart by their keys (a file mixing two fails: both map to the
    same target):

    - ``CLIPModel`` (e.g. ``openai/clip-vit-large-patch14-336``): ``vision_model.*`` plus the
      text tower, projections and ``logit_scale``, which are dropped as the CLIP text side;
    - ``CLIPVisionModel`` from transformers < 5 (and the hub): ``vision_model.*`` only;
    - ``CLIPVisionModel.save_pretrained`` of transformers >= 5: no prefix (``embeddings.*``,
      ``pre_layrnorm.*``, ``encoder.layers.*``, ``post_layernorm.*``).

    Only the vision tower's four parts are renamed: any other key stays unknown. Whether the
    installed ``CLIPVisionModel`` keeps ``vision_model.`` in its own keys depends on the
    transformers version too, so the target side asks it.

    Example:
        >>> rules = clip_vision_rules("", "model.")
        >>> rules.target("encoder.layers.0.mlp.fc1.weight") == rules.target(
        ...     "vision_model.encoder.layers.0.mlp.fc1.weight")
        True
    """
    s, inner = re.escape(src), "vision_model." if _clip_keeps_vision_model_prefix() else ""
    tower = r"(?:vision_model\.)?"
    parts = r"(embeddings\.(?:class_embedding$|patch_embedding\.|position_embedding\.)"
    parts += r"|pre_layrnorm\.|encoder\.layers\.\d+\.|post_layernorm\.)"
    return (
        KeyRules()
        .drop(s + tower + r"embeddings\.position_ids$", "buffer recomputed by transformers")
        .rename(s + tower + parts + r"(.*)$", dst + inner + r"\1\2")
        .drop(s + r"(text_model\.|text_projection|visual_projection|logit_scale)", "CLIP text side")
    )


@functools.cache
def _clip_keeps_vision_model_prefix() -> bool:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tiny = CLIPVisionConfig(
        hidden_size=4, intermediate_size=4, num_hidden_layers=1, num_attention_heads=1
    )
    with torch.device("meta"):
        keys = CLIPVisionModel(tiny).state_dict().keys()
    return any(k.startswith("vision_model.") for k in keys)


def blip2_video_encoder_conversion(
    state: Mapping[str, torch.Tensor], vit_depth: int, vit_state: Mapping | None = None
) -> Conversion:
    """A BLIP-2 checkpoint (LAVIS or HF layout) -> ``BlipVideoEncoder`` keys.

    Args:
        state: LAVIS (``visual_encoder.*``, ``ln_vision.*``, ``Qformer.bert.*``,
            ``query_tokens``) or HF (``vision_model.*``, ``qformer.*``, ``query_tokens``) keys.
        vit_depth: blocks the encoder keeps.
        vit_state: a separate EVA checkpoint (``eva_vit_g.pth``, keys without prefix) for BLIP-2
            files that hold no ``visual_encoder.*``.
    """
    hf = any(k.startswith("qformer.") for k in state)
    rules = KeyRules().rename(r"query_tokens$", "qformer.query_tokens")
    if hf:
        state = split_hf_qkv_bias(state)
        rules.extend(hf_blip2_vision_rules("vision_model.", "visual_encoder.", "ln_vision."))
        rules.rename(r"qformer\.(.+)$", r"qformer.model.\1")
    else:
        rules.extend(eva_rules("visual_encoder.", "visual_encoder.", vit_depth))
        rules.rename(r"ln_vision\.(weight|bias)$", r"ln_vision.\1")
        rules.extend(qformer_rules("Qformer.bert.", "qformer.model."))
        rules.drop(r"Qformer\.cls\.", TEXT_ONLY)
    # BLIP-2's heads (itm, projections, temp) and language model; the prefixes we read must
    # match a rule above, so that a key of unknown layout there is reported, not dropped.
    rules.drop(r"(?!visual_encoder\.|ln_vision\.|Qformer\.|qformer\.|vision_model\.)", NOT_USED)
    conversion = rules.apply(state)
    if vit_state is not None:
        conversion.update(eva_rules("", "visual_encoder.", vit_depth).apply(vit_state))
    return conversion


def load_conversion(module: nn.Module, conversion: Conversion, source: str) -> None:
    """Load converted tensors into ``module``; fail on any missing or unexpected key.

    Raises:
        KeyError: naming the missing/unexpected keys and the source checkpoint.
    """
    conversion.check_complete(source)
    result = module.load_state_dict(conversion.state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(
            f"{source}: {len(result.missing_keys)} parameters not in the checkpoint "
            f"{result.missing_keys[:5]}, {len(result.unexpected_keys)} unexpected "
            f"{result.unexpected_keys[:5]}"
        )
    log.info("%s -> %s: %s", source, type(module).__name__, conversion.summary())


def load_blip2_video_encoder(
    encoder: BlipVideoEncoder, pretrained: str, vit_pretrained: str | None = None
) -> None:
    """Load BLIP-2 weights into ``encoder``; fails on any missing parameter.

    Args:
        pretrained: BLIP-2 weights for the ViT, ``ln_vision``, Q-Former and queries: a LAVIS
            checkpoint (``blip2_pretrained_flant5xxl.pth``) or an HF BLIP-2 folder / hub id
            (``Salesforce/blip2-opt-2.7b``).
        vit_pretrained: LAVIS's ``eva_vit_g.pth``, for BLIP-2 files without ViT weights.
    """

    def keep(key: str) -> bool:  # BLIP-2 files also hold heads and a language model
        return key.startswith(BLIP2_VIDEO_PREFIXES)

    state = read_checkpoint(resolve(pretrained, keep), keep=keep)
    vit = None if vit_pretrained is None else read_checkpoint(resolve(vit_pretrained))
    depth = len(encoder.visual_encoder.blocks)
    load_conversion(encoder, blip2_video_encoder_conversion(state, depth, vit), pretrained)


def load_imagebind_audio_encoder(encoder: ImageBindAudioEncoder, path: str) -> None:
    """Load the audio branch of an ImageBind checkpoint (``imagebind_huge.pth``) into
    ``encoder``; fails on any missing parameter or a different logit scale."""
    state = read_checkpoint(path)
    check_imagebind_logit_scale(state, LOGIT_SCALE_KEY, encoder.logit_scale)
    load_conversion(encoder, imagebind_audio_rules("", "").apply(state), path)


def pretrained_video_encoder(
    pretrained: str, vit_pretrained: str | None = None, **sizes
) -> BlipVideoEncoder:
    """A `BlipVideoEncoder` of ``sizes`` with the BLIP-2 weights of ``pretrained``."""
    encoder = BlipVideoEncoder(**sizes)
    load_blip2_video_encoder(encoder, pretrained, vit_pretrained)
    return encoder


def pretrained_audio_encoder(pretrained: str, **sizes) -> ImageBindAudioEncoder:
    """An `ImageBindAudioEncoder` of ``sizes`` with ImageBind's audio weights."""
    encoder = ImageBindAudioEncoder(**sizes)
    load_imagebind_audio_encoder(encoder, pretrained)
    return encoder


__all__ = [
    "blip2_video_encoder_conversion",
    "load_blip2_video_encoder",
    "load_imagebind_audio_encoder",
    "pretrained_audio_encoder",
    "pretrained_video_encoder",
    "check_imagebind_logit_scale",
    "convert_imagebind_audio_state_dict",
    "IMAGEBIND_AUDIO_KEY_PREFIXES",
    "LOGIT_SCALE_KEY",
    "clip_vision_rules",
    "eva_rules",
    "hf_blip2_vision_rules",
    "imagebind_audio_rules",
    "load_conversion",
    "qformer_rules",
    "split_hf_qkv_bias",
]
