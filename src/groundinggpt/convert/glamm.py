"""A released GLaMM checkpoint (``MBZUAI/GLaMM-*``) -> this project's keys (``model=glamm_7b``).

GLaMM (Rasheed et al. 2024, arXiv 2311.03356; code: groundingLMM) saves a
``GLaMMForCausalLM`` in Hugging Face shards: the Llama under ``model.*`` / ``lm_head.*`` and
every other part below ``model.`` (names from groundingLMM's ``model/GLaMM.py``,
``model/llava/llava_with_region_arch.py``, ``model/SAM/`` and ``model/layers.py``):

================================================ ============================================
GLaMM key                                        this project (`GroundingGPT` state dict)
================================================ ============================================
``model.{embed_tokens,layers,norm}.*``           ``llm.model.*``; ``lm_head.*`` ->
                                                 ``llm.lm_head.*`` (token rows moved)
``model.mm_projector.{0,2}.*`` (Linear-GELU-     ``branches.image.adapter.{fc1,fc2}.*``
Linear)
``model.vision_tower.vision_tower.vision_model`` ``branches.image.encoder.model.*`` (CLIP;
                                                 usually absent, see below)
``model.grounding_encoder.image_encoder.*``      ``pixel_decoder.sam.vision_encoder.*``
``model.grounding_encoder.prompt_encoder.*``     ``pixel_decoder.sam.prompt_encoder.*`` (its
                                                 ``pe_layer`` -> ``shared_image_embedding``)
``model.grounding_encoder.mask_decoder.*``       ``pixel_decoder.sam.mask_decoder.*``
``model.text_hidden_fcs.0.{0,2}.*``              ``pixel_decoder.seg_projection.{0,2}.*``
``model.region_encoder.mlvl_fuse.*``             ``region_encoder.fuse.*``
``model.region_encoder.roi_align.pconvs.*``      ``region_encoder.level_convs.*``
``model.region_encoder.roi_align.pos_embedd.*``  ``region_encoder.box_embed.*``
``model.region_encoder.roi_align.flatten_linear`` ``region_encoder.roi_proj.*``
``model.region_encoder.roi_align.updims.*``      ``region_encoder.out_proj.*``
================================================ ============================================

For a model without a region encoder (``region_encoder=False``) the region encoder's tensors
are dropped, each with that reason.

SAM's names are those of Meta's ``segment_anything`` code (GLaMM vendors it); the Hugging Face
``SamModel`` this project builds names the same tensors differently (`sam_rules`). The
hypernetwork and IoU MLPs are the one non-prefix rename: SAM's ``layers.0 ... layers.{n-1}``
become HF's ``proj_in``, ``layers.0 ... layers.{n-3}``, ``proj_out``.

The CLIP tower: GLaMM's ``merge_lora_weights.py`` leaves every ``vision_tower`` key out of the
saved model (the tower is frozen ``openai/clip-vit-large-patch14-336``), so it usually comes
from that checkpoint (``--clip``); a re-saved GLaMM that holds it converts it too.

Token rows: GLaMM adds ``<im_start> <im_end>``, then ``<bbox> <point> [SEG] <p> </p>`` to
Vicuna's 32000 (`GLAMM_TOKEN_ORDER`, or the ids its tokenizer files give); this project adds
its nine modality tokens, then ``[SEG] <p> </p>`` and ``<region>`` (`target_tokens`). Rows
of tokens both have move to our ids: GLaMM's ``<bbox>`` is our ``<region>`` (the position
whose embedding the region encoder replaces); ``<point>``, which GLaMM's code never reads, is
dropped. Our tokens GLaMM lacks (``<im_patch>``, whose positions hold image features, and the
video / audio tokens) start as the mean of the base rows, as
`groundinggpt.models.llm.add_special_tokens` starts them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from groundinggpt.convert.components import clip_vision_rules
from groundinggpt.convert.mapping import Conversion, KeyRules
from groundinggpt.convert.released import _ids_from_tokenizer_files
from groundinggpt.modalities import PIXEL_TOKENS, REGION_TOKEN, SEG_TOKEN, SPECIAL_TOKENS

# groundingLMM train.py, setup_tokenizer_and_special_tokens: the order GLaMM adds its tokens.
GLAMM_TOKEN_ORDER = ["<im_start>", "<im_end>", "<bbox>", "<point>", "[SEG]", "<p>", "</p>"]
# GLaMM's token -> ours, where the names differ.
GLAMM_TOKEN_NAMES = {"<bbox>": REGION_TOKEN}
TOKEN_ROW_KEYS = {"model.embed_tokens.weight": "llm.model.embed_tokens.weight"}
TOKEN_ROW_KEYS["lm_head.weight"] = "llm.lm_head.weight"
NO_REGION = "region encoder not in this model"
UNUSED_TOKEN = "GLaMM token this model does not have (GLaMM's code never reads <point>)"
# HF SamModel keeps the random-feature matrix once and ties the prompt encoder's copy to it.
SHARED_PE = "pixel_decoder.sam.shared_image_embedding.positional_embedding"
TIED_PE = "pixel_decoder.sam.prompt_encoder.shared_embedding.positional_embedding"


def _mlp_rules(src: str, dst: str, depth: int, groups: int = 0) -> KeyRules:
    """SAM's ``MLP`` (``layers.0 .. layers.{depth-1}``) below ``src`` -> HF ``SamFeedForward``.

    ``groups``: capture groups in ``src`` (kept in ``dst`` as ``\\1`` ...), before the
    ``weight|bias`` group.
    """
    wb, g = r"\.(weight|bias)$", rf"\{groups + 1}"
    rules = KeyRules().rename(src + r"layers\.0" + wb, dst + "proj_in." + g)
    for i in range(1, depth - 1):
        rules.rename(src + rf"layers\.{i}" + wb, dst + f"layers.{i - 1}." + g)
    return rules.rename(src + rf"layers\.{depth - 1}" + wb, dst + "proj_out." + g)


def sam_rules(src: str, dst: str, mlp_depth: int = 3) -> KeyRules:
    """Meta's ``Sam`` keys below ``src`` -> Hugging Face ``SamModel`` keys below ``dst``.

    ``mlp_depth``: layers of the mask decoder's hypernetwork and IoU MLPs (3 in every SAM).

    Example:
        >>> sam_rules("", "sam.").target("image_encoder.blocks.3.norm1.weight")
        ('sam.vision_encoder.layers.3.layer_norm1.weight', '')
    """
    s, wb = re.escape(src), r"\.(weight|bias)$"
    ie, ve = s + r"image_encoder\.", dst + "vision_encoder."
    blk, layer = ie + r"blocks\.(\d+)\.", ve + r"layers.\1."
    pe, hp = s + r"prompt_encoder\.", dst + "prompt_encoder."
    md, hm = s + r"mask_decoder\.", dst + "mask_decoder."
    two_way, hf_two_way = md + r"transformer\.", hm + "transformer."
    attn = r"(q_proj|k_proj|v_proj|out_proj)"
    return (
        KeyRules()
        # image encoder (ViTDet-style ViT + neck)
        .rename(ie + r"patch_embed\.proj" + wb, ve + r"patch_embed.projection.\1")
        .rename(ie + r"pos_embed$", ve + "pos_embed")
        .rename(blk + r"norm(1|2)" + wb, layer + r"layer_norm\2.\3")
        .rename(blk + r"attn\.(qkv|proj)" + wb, layer + r"attn.\2.\3")
        .rename(blk + r"attn\.(rel_pos_h|rel_pos_w)$", layer + r"attn.\2")
        .rename(blk + r"mlp\.(lin1|lin2)" + wb, layer + r"mlp.\2.\3")
        .rename(ie + r"neck\.0\.weight$", ve + "neck.conv1.weight")  # 1x1 conv, no bias
        .rename(ie + r"neck\.1" + wb, ve + r"neck.layer_norm1.\1")
        .rename(ie + r"neck\.2\.weight$", ve + "neck.conv2.weight")  # 3x3 conv, no bias
        .rename(ie + r"neck\.3" + wb, ve + r"neck.layer_norm2.\1")
        # prompt encoder
        .rename(
            pe + r"pe_layer\.positional_encoding_gaussian_matrix$",
            dst + "shared_image_embedding.positional_embedding",
        )
        .rename(pe + r"point_embeddings\.(\d+)\.weight$", hp + r"point_embed.\1.weight")
        .rename(pe + r"(not_a_point_embed|no_mask_embed)\.weight$", hp + r"\1.weight")
        .rename(pe + r"mask_downscaling\.0" + wb, hp + r"mask_embed.conv1.\1")
        .rename(pe + r"mask_downscaling\.1" + wb, hp + r"mask_embed.layer_norm1.\1")
        .rename(pe + r"mask_downscaling\.3" + wb, hp + r"mask_embed.conv2.\1")
        .rename(pe + r"mask_downscaling\.4" + wb, hp + r"mask_embed.layer_norm2.\1")
        .rename(pe + r"mask_downscaling\.6" + wb, hp + r"mask_embed.conv3.\1")
        # mask decoder: two-way transformer, tokens, upscaling, MLP heads
        .rename(md + r"(iou_token|mask_tokens)\.weight$", hm + r"\1.weight")
        .rename(
            two_way + r"layers\.(\d+)\.(self_attn|cross_attn_token_to_image|"
            r"cross_attn_image_to_token)\." + attn + wb,
            hf_two_way + r"layers.\1.\2.\3.\4",
        )
        .rename(
            two_way + r"layers\.(\d+)\.norm([1-4])" + wb, hf_two_way + r"layers.\1.layer_norm\2.\3"
        )
        .rename(
            two_way + r"layers\.(\d+)\.mlp\.(lin1|lin2)" + wb, hf_two_way + r"layers.\1.mlp.\2.\3"
        )
        .rename(
            two_way + r"final_attn_token_to_image\." + attn + wb,
            hf_two_way + r"final_attn_token_to_image.\1.\2",
        )
        .rename(two_way + r"norm_final_attn" + wb, hf_two_way + r"layer_norm_final_attn.\1")
        .rename(md + r"output_upscaling\.0" + wb, hm + r"upscale_conv1.\1")
        .rename(md + r"output_upscaling\.1" + wb, hm + r"upscale_layer_norm.\1")
        .rename(md + r"output_upscaling\.3" + wb, hm + r"upscale_conv2.\1")
        .extend(_mlp_rules(md + r"iou_prediction_head\.", hm + "iou_prediction_head.", mlp_depth))
        .extend(  # one hypernetwork MLP per mask token, its index kept
            _mlp_rules(
                md + r"output_hypernetworks_mlps\.(\d+)\.",
                hm + r"output_hypernetworks_mlps.\1.",
                mlp_depth,
                groups=1,
            )
        )
        .drop(
            s + r"pixel_(mean|std)$",
            "SAM's input normalization constants (SegmentationProcessor normalizes)",
        )
    )


def region_encoder_rules(src: str, dst: str | None) -> KeyRules:
    """GLaMM's ``MLVLROIQueryModule`` keys below ``src`` -> `RegionEncoder` keys below ``dst``.

    Written key by key from groundingLMM's ``model/layers.py`` (mmcv ``ConvModule`` with
    GroupNorm: ``conv`` without bias, ``gn``; ``pos_embedd`` = Linear, ReLU, LayerNorm,
    Linear, ReLU, LayerNorm), so a key of another layout stays unknown. ``dst=None`` drops
    every one (a model without a region encoder).
    """
    s, wb = re.escape(src), r"\.(weight|bias)$"
    table = [
        (r"mlvl_fuse\.input_conv\.(\d+)" + wb, r"fuse.input_conv.\1.\2"),
        (r"mlvl_fuse\.fuse_convs\.(\d+)\.conv\.(weight)$", r"fuse.fuse_convs.\1.conv.\2"),
        (r"mlvl_fuse\.fuse_convs\.(\d+)\.gn" + wb, r"fuse.fuse_convs.\1.gn.\2"),
        (r"roi_align\.pconvs\.(\d+)" + wb, r"level_convs.\1.\2"),
        (r"roi_align\.pos_embedd\.(0|2|3|5)" + wb, r"box_embed.\1.\2"),
        (r"roi_align\.flatten_linear" + wb, r"roi_proj.\1"),
        (r"roi_align\.updims" + wb, r"out_proj.\1"),
    ]
    rules = KeyRules()
    for pattern, target in table:
        if dst is None:
            rules.drop(s + pattern, NO_REGION)
        else:
            rules.rename(s + pattern, dst + target)
    return rules


def glamm_rules(region_encoder: bool = True) -> KeyRules:
    """Key rules for a released GLaMM state dict (see the module table).

    ``region_encoder``: the target model has one (``model.region_encoder``); else its
    tensors are dropped.
    """
    return (
        KeyRules()
        .drop(
            r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$",
            "buffer recomputed by transformers",
        )
        .rename(r"model\.(embed_tokens|layers|norm)\.(.+)$", r"llm.model.\1.\2")
        .rename(r"lm_head\.weight$", "llm.lm_head.weight")
        .rename(r"model\.mm_projector\.0\.(weight|bias)$", r"branches.image.adapter.fc1.\1")
        .rename(r"model\.mm_projector\.2\.(weight|bias)$", r"branches.image.adapter.fc2.\1")
        .extend(
            clip_vision_rules("model.vision_tower.vision_tower.", "branches.image.encoder.model.")
        )
        .extend(sam_rules("model.grounding_encoder.", "pixel_decoder.sam."))
        .rename(
            r"model\.text_hidden_fcs\.0\.0\.(weight|bias)$", r"pixel_decoder.seg_projection.0.\1"
        )
        .rename(
            r"model\.text_hidden_fcs\.0\.2\.(weight|bias)$", r"pixel_decoder.seg_projection.2.\1"
        )
        .extend(
            region_encoder_rules(
                "model.region_encoder.", "region_encoder." if region_encoder else None
            )
        )
    )


def glamm_token_ids(folder: str | Path | None, vocab_size: int) -> dict[str, int]:
    """Ids of GLaMM's added tokens: from the release's tokenizer files, else GLaMM's order.

    Reads ``added_tokens.json``, ``tokenizer_config.json`` or ``tokenizer.json`` when
    ``folder`` has them (the tokens of `GLAMM_TOKEN_ORDER` found there); otherwise the seven
    tokens take the last ``vocab_size`` rows in GLaMM's order.
    """
    found: dict[str, int] = {}
    if folder is not None and Path(folder).is_dir():
        found = _ids_from_tokenizer_files(Path(folder))
    found = {t: i for t, i in found.items() if t in GLAMM_TOKEN_ORDER}
    if not found:
        base = vocab_size - len(GLAMM_TOKEN_ORDER)
        return {tok: base + i for i, tok in enumerate(GLAMM_TOKEN_ORDER)}
    if SEG_TOKEN not in found:
        raise ValueError(f"{folder}: tokenizer files lack GLaMM's [SEG]")
    return found


def target_tokens(region_encoder: bool = True) -> list[str]:
    """The tokens this project adds to ``model=glamm_7b``, in `build_grounding_model`'s order."""
    return [*SPECIAL_TOKENS, *PIXEL_TOKENS, *([REGION_TOKEN] if region_encoder else [])]


def default_target_token_ids(base: int, region_encoder: bool = True) -> dict[str, int]:
    """Ids this project gives `target_tokens` on a ``base``-token vocabulary (appended)."""
    return {tok: base + i for i, tok in enumerate(target_tokens(region_encoder))}


def our_token_ids(source_ids: Mapping[str, int]) -> dict[str, int]:
    """GLaMM's token ids under our names (``<bbox>`` -> ``<region>``)."""
    return {GLAMM_TOKEN_NAMES.get(tok, tok): i for tok, i in source_ids.items()}


def move_token_rows(
    weight: torch.Tensor, source_ids: Mapping[str, int], target_ids: Mapping[str, int]
) -> torch.Tensor:
    """GLaMM's ``(V_glamm, D)`` embedding (or LM head) -> ours ``(V, D)``.

    ``source_ids``: GLaMM's added tokens under our names (`our_token_ids`). Rows below the
    first added token are the base vocabulary and stay; each token both have moves to its id
    here; our tokens GLaMM lacks get the mean of the base rows.

    Raises:
        ValueError: when GLaMM's rows are not the base vocabulary plus its added tokens, or
            our ids overlap the base vocabulary.
    """
    base = min(source_ids.values())
    if sorted(source_ids.values()) != list(range(base, weight.shape[0])):
        raise ValueError(
            f"{weight.shape[0]} rows are not {base} base rows plus the tokens {dict(source_ids)}"
        )
    if min(target_ids.values()) < base:
        raise ValueError(f"target token ids {dict(target_ids)} overlap the {base} base rows")
    out = weight.new_empty(max(target_ids.values()) + 1, weight.shape[1])
    out[:base] = weight[:base]
    out[base:] = weight[:base].float().mean(dim=0, keepdim=True).to(weight.dtype)
    for tok, new in target_ids.items():
        if tok in source_ids:
            out[new] = weight[source_ids[tok]]
    return out


def token_row_report(
    source_ids: Mapping[str, int], target_ids: Mapping[str, int]
) -> dict[str, dict[str, object]]:
    """Where each added token's row comes from: ``{our token: {"glamm": id, "ours": id}}``
    (``source_ids`` under our names, `our_token_ids`)."""
    report: dict[str, dict[str, object]] = {}
    for tok in {**source_ids, **target_ids}:
        entry: dict[str, object] = {"glamm": source_ids.get(tok), "ours": target_ids.get(tok)}
        if tok not in target_ids:
            entry["dropped"] = UNUSED_TOKEN if tok == "<point>" else NO_REGION
        elif tok not in source_ids:
            entry["init"] = "mean of the base rows (GLaMM has no such token)"
        report[tok] = entry
    return report


def convert_glamm(
    state: Mapping[str, torch.Tensor],
    clip: Mapping[str, torch.Tensor] | None = None,
    source_ids: Mapping[str, int] | None = None,
    target_ids: Mapping[str, int] | None = None,
    region_encoder: bool = True,
) -> Conversion:
    """Convert a released GLaMM state dict (plus, optionally, CLIP weights) to our keys.

    Args:
        state: the release's tensors (all shards merged, keys as stored).
        clip: HF CLIP ViT-L/14-336 weights (any layout `clip_vision_rules` reads), for the
            vision tower the release leaves out.
        source_ids: GLaMM's added-token ids, GLaMM's names (default: `GLAMM_TOKEN_ORDER`
            at the end).
        target_ids: this project's ids of `target_tokens` (default: appended to GLaMM's
            base vocabulary in that order, as `build_grounding_model` adds them to Vicuna's).
        region_encoder: the target model has a region encoder (``model.region_encoder``);
            False drops GLaMM's, and its ``<bbox>`` row.

    Raises:
        ValueError: on token ids that do not fit the embedding rows; unknown keys are left
            in ``conversion.unknown`` for `Conversion.check_complete`.

    Example:
        >>> conv = convert_glamm(read_checkpoint("GLaMM-GranD-f/"), read_checkpoint("clip/"))
        >>> conv.check_complete("GLaMM"); print(conv.summary())
    """
    conversion = glamm_rules(region_encoder).apply(state)
    if clip is not None:
        conversion.update(clip_vision_rules("", "branches.image.encoder.model.").apply(clip))
    if SHARED_PE in conversion.state:
        conversion.state[TIED_PE] = conversion.state[SHARED_PE]
        conversion.sources[TIED_PE] = conversion.sources[SHARED_PE]
    for src, dst in TOKEN_ROW_KEYS.items():
        if dst not in conversion.state:
            continue
        weight = conversion.state[dst]
        glamm_ids = source_ids or glamm_token_ids(None, weight.shape[0])
        theirs = our_token_ids(glamm_ids)
        ours = target_ids or default_target_token_ids(min(theirs.values()), region_encoder)
        conversion.state[dst] = move_token_rows(weight, theirs, ours)
        glamm_name = {v: k for k, v in GLAMM_TOKEN_NAMES.items()}
        for tok, entry in token_row_report(theirs, ours).items():
            if "dropped" in entry:
                name = glamm_name.get(tok, tok)
                conversion.dropped[f"{src}[{entry['glamm']}] ({name})"] = str(entry["dropped"])
    return conversion


# What GLaMM's config.json records (GLaMM-GranD-f / FullScope) and model=glamm_7b builds.
REFERENCE_CONFIG = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "mm_hidden_size": 1024,
    "mm_vision_select_layer": -2,
    "out_dim": 256,
    "mm_use_im_start_end": True,
}


def check_glamm_config(folder: str | Path) -> list[str]:
    """Differences between the release's ``config.json`` and ``model=glamm_7b`` (one line each)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return []
    config = json.loads(path.read_text())
    return [
        f"{key}: release {config[key]!r}, model=glamm_7b {value!r}"
        for key, value in REFERENCE_CONFIG.items()
        if key in config and config[key] != value
    ]


__all__ = [
    "GLAMM_TOKEN_ORDER",
    "REFERENCE_CONFIG",
    "GLAMM_TOKEN_NAMES",
    "check_glamm_config",
    "convert_glamm",
    "default_target_token_ids",
    "glamm_rules",
    "glamm_token_ids",
    "move_token_rows",
    "our_token_ids",
    "region_encoder_rules",
    "sam_rules",
    "target_tokens",
    "token_row_report",
]
