"""A released GLaMM layout converts into ``model=glamm_7b``'s keys, tensor for tensor.

`glamm_layout` writes GLaMM's checkpoint keys and shapes by hand from groundingLMM's code
(``model/GLaMM.py``, ``model/llava/llava_with_region_arch.py``, ``model/SAM/modeling/*.py``,
``model/layers.py``), at any width: the toy model here is ``model=tiny_seg`` with GLaMM's
single image branch (its video and audio branches removed) and an untied LM head as Vicuna's.
References that do not go through the converter: an HF Llama loaded from GLaMM's LLM keys,
GLaMM's projector and ``text_hidden_fcs`` with functional ops, and (when the
``segment-anything`` package is installed) Meta's own SAM modules built at toy width, whose
state dict is the original layout itself.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from groundinggpt.build import build_model
from groundinggpt.convert.__main__ import main
from groundinggpt.convert.glamm import GLAMM_TOKEN_ORDER, convert_glamm, sam_rules
from groundinggpt.modalities import PIXEL_TOKENS, REGION_TOKEN, SPECIAL_TOKENS
from groundinggpt.training.checkpoint import load_weights
from tests.conftest import compose_config

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Sizes:
    """GLaMM's widths; the defaults are ``model=tiny_seg``'s (GLaMM-7B: `GLAMM_7B`)."""

    vocab: int = 512 + len(GLAMM_TOKEN_ORDER)  # base vocabulary + GLaMM's seven tokens
    d: int = 128  # LLM width
    layers: int = 4
    mlp: int = 384
    clip_w: int = 64
    clip_layers: int = 3
    clip_mlp: int = 128
    clip_patch: int = 16
    clip_image: int = 64
    sam_w: int = 32  # SAM ViT width
    sam_layers: int = 2
    sam_heads: int = 2
    sam_mlp: int = 64
    sam_patch: int = 4
    sam_image: int = 64
    window: int = 4
    global_attn: tuple[int, ...] = (1,)
    prompt: int = 32  # SAM prompt / mask-decoder width (= GLaMM's out_dim)
    mask_in_chans: int = 4
    dec_mlp: int = 64
    dec_layers: int = 2
    iou_hidden: int = 32
    # MLVLROIQueryModule: CLIP width in, fuse width, hidden, box-embedding width, CLIP layers
    # read, fuse convs, RoI side (configs/model/region_encoder/tiny.yaml)
    region: dict = field(
        default_factory=lambda: {
            "in": 64,
            "width": 32,
            "hidden": 64,
            "box": 32,
            "levels": 3,
            "fuse": 2,
            "roi": 7,
        }
    )


# groundingLMM: build_sam_vit_h, LlavaMetaModel (CLIP-L/14-336, 1024 -> 4096), Vicuna-7B.
GLAMM_7B = Sizes(
    vocab=32000 + 7,
    d=4096,
    layers=32,
    mlp=11008,
    clip_w=1024,
    clip_layers=24,
    clip_mlp=4096,
    clip_patch=14,
    clip_image=336,
    sam_w=1280,
    sam_layers=32,
    sam_heads=16,
    sam_mlp=5120,
    sam_patch=16,
    sam_image=1024,
    window=14,
    global_attn=(7, 15, 23, 31),
    prompt=256,
    mask_in_chans=16,
    dec_mlp=2048,
    dec_layers=2,
    iou_hidden=256,
    region={
        "in": 1024,
        "width": 1024,
        "hidden": 1024,
        "box": 256,
        "levels": 4,
        "fuse": 5,
        "roi": 14,
    },
)


def _lin(sd: Shapes, key: str, out_dim: int, in_dim: int, bias: bool = True) -> None:
    sd[key + ".weight"] = (out_dim, in_dim)
    if bias:
        sd[key + ".bias"] = (out_dim,)


def _ln(sd: Shapes, key: str, dim: int) -> None:
    sd[key + ".weight"], sd[key + ".bias"] = (dim,), (dim,)


def _conv(sd: Shapes, key: str, out_c: int, in_c: int, k: int, bias: bool = True) -> None:
    sd[key + ".weight"] = (out_c, in_c, k, k)
    if bias:
        sd[key + ".bias"] = (out_c,)


def glamm_layout(z: Sizes, clip_tower: bool = False, buffers: bool = False) -> Shapes:
    """GLaMMForCausalLM's saved keys and shapes, from groundingLMM's module definitions.

    ``clip_tower``: include ``model.vision_tower.vision_tower.*`` (merge_lora_weights.py
    leaves it out); ``buffers``: the persistent buffers of older transformers
    (``rotary_emb.inv_freq``, CLIP ``position_ids``).
    """
    sd: Shapes = {"model.embed_tokens.weight": (z.vocab, z.d)}
    for i in range(z.layers):  # LlamaDecoderLayer
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _lin(sd, p + "self_attn." + proj, z.d, z.d, bias=False)
        _lin(sd, p + "mlp.gate_proj", z.mlp, z.d, bias=False)
        _lin(sd, p + "mlp.up_proj", z.mlp, z.d, bias=False)
        _lin(sd, p + "mlp.down_proj", z.d, z.mlp, bias=False)
        sd[p + "input_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"] = (z.d,)
        if buffers:
            sd[p + "self_attn.rotary_emb.inv_freq"] = (z.d // 64,)
    sd["model.norm.weight"] = (z.d,)
    sd["lm_head.weight"] = (z.vocab, z.d)
    # LlavaMetaModel.mm_projector: Linear, GELU, Linear
    _lin(sd, "model.mm_projector.0", z.d, z.clip_w)
    _lin(sd, "model.mm_projector.2", z.d, z.d)
    if clip_tower:  # CLIPVisionTower.vision_tower = CLIPVisionModel
        v = "model.vision_tower.vision_tower.vision_model."
        n = (z.clip_image // z.clip_patch) ** 2 + 1
        sd[v + "embeddings.class_embedding"] = (z.clip_w,)
        sd[v + "embeddings.patch_embedding.weight"] = (z.clip_w, 3, z.clip_patch, z.clip_patch)
        sd[v + "embeddings.position_embedding.weight"] = (n, z.clip_w)
        if buffers:
            sd[v + "embeddings.position_ids"] = (1, n)
        _ln(sd, v + "pre_layrnorm", z.clip_w)
        for i in range(z.clip_layers):
            p = f"{v}encoder.layers.{i}."
            for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
                _lin(sd, p + "self_attn." + proj, z.clip_w, z.clip_w)
            _ln(sd, p + "layer_norm1", z.clip_w)
            _lin(sd, p + "mlp.fc1", z.clip_mlp, z.clip_w)
            _lin(sd, p + "mlp.fc2", z.clip_w, z.clip_mlp)
            _ln(sd, p + "layer_norm2", z.clip_w)
        _ln(sd, v + "post_layernorm", z.clip_w)
    sd |= sam_layout("model.grounding_encoder.", z)
    # GLaMMBaseModel.text_hidden_fcs = ModuleList([Sequential(Linear, ReLU, Linear, Dropout)])
    _lin(sd, "model.text_hidden_fcs.0.0", z.d, z.d)
    _lin(sd, "model.text_hidden_fcs.0.2", z.prompt, z.d)
    sd |= region_layout("model.region_encoder.", z)
    return sd


def sam_layout(prefix: str, z: Sizes) -> Shapes:
    """segment_anything's ``Sam`` (build_sam.py's _build_sam at the widths of ``z``)."""
    sd: Shapes = {}
    ie, w, grid = prefix + "image_encoder.", z.sam_w, z.sam_image // z.sam_patch
    _conv(sd, ie + "patch_embed.proj", w, 3, z.sam_patch)
    sd[ie + "pos_embed"] = (1, grid, grid, w)
    head = w // z.sam_heads
    for i in range(z.sam_layers):
        p = f"{ie}blocks.{i}."
        span = grid if i in z.global_attn else z.window  # Block: input_size of Attention
        _ln(sd, p + "norm1", w)
        _lin(sd, p + "attn.qkv", 3 * w, w)
        _lin(sd, p + "attn.proj", w, w)
        sd[p + "attn.rel_pos_h"] = sd[p + "attn.rel_pos_w"] = (2 * span - 1, head)
        _ln(sd, p + "norm2", w)
        _lin(sd, p + "mlp.lin1", z.sam_mlp, w)
        _lin(sd, p + "mlp.lin2", w, z.sam_mlp)
    c = z.prompt
    _conv(sd, ie + "neck.0", c, w, 1, bias=False)
    _ln(sd, ie + "neck.1", c)
    _conv(sd, ie + "neck.2", c, c, 3, bias=False)
    _ln(sd, ie + "neck.3", c)
    pe, mic = prefix + "prompt_encoder.", z.mask_in_chans
    sd[pe + "pe_layer.positional_encoding_gaussian_matrix"] = (2, c // 2)
    for i in range(4):
        sd[f"{pe}point_embeddings.{i}.weight"] = (1, c)
    sd[pe + "not_a_point_embed.weight"] = sd[pe + "no_mask_embed.weight"] = (1, c)
    _conv(sd, pe + "mask_downscaling.0", mic // 4, 1, 2)
    _ln(sd, pe + "mask_downscaling.1", mic // 4)  # LayerNorm2d
    _conv(sd, pe + "mask_downscaling.3", mic, mic // 4, 2)
    _ln(sd, pe + "mask_downscaling.4", mic)
    _conv(sd, pe + "mask_downscaling.6", c, mic, 1)
    md = prefix + "mask_decoder."
    tw = md + "transformer."

    def attention(key: str, internal: int) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            _lin(sd, key + "." + proj, internal, c)
        _lin(sd, key + ".out_proj", c, internal)

    for i in range(z.dec_layers):  # TwoWayAttentionBlock, attention_downsample_rate 2
        p = f"{tw}layers.{i}."
        attention(p + "self_attn", c)
        attention(p + "cross_attn_token_to_image", c // 2)
        attention(p + "cross_attn_image_to_token", c // 2)
        for n in range(1, 5):
            _ln(sd, f"{p}norm{n}", c)
        _lin(sd, p + "mlp.lin1", z.dec_mlp, c)
        _lin(sd, p + "mlp.lin2", c, z.dec_mlp)
    attention(tw + "final_attn_token_to_image", c // 2)
    _ln(sd, tw + "norm_final_attn", c)
    sd[md + "iou_token.weight"] = (1, c)
    sd[md + "mask_tokens.weight"] = (4, c)  # num_multimask_outputs 3 + 1
    sd[md + "output_upscaling.0.weight"] = (c, c // 4, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    sd[md + "output_upscaling.0.bias"] = (c // 4,)
    _ln(sd, md + "output_upscaling.1", c // 4)
    sd[md + "output_upscaling.3.weight"] = (c // 4, c // 8, 2, 2)
    sd[md + "output_upscaling.3.bias"] = (c // 8,)
    for t in range(4):  # MLP(c, c, c // 8, 3)
        p = f"{md}output_hypernetworks_mlps.{t}.layers."
        _lin(sd, p + "0", c, c)
        _lin(sd, p + "1", c, c)
        _lin(sd, p + "2", c // 8, c)
    p = md + "iou_prediction_head.layers."  # MLP(c, iou_hidden, 4, 3)
    _lin(sd, p + "0", z.iou_hidden, c)
    _lin(sd, p + "1", z.iou_hidden, z.iou_hidden)
    _lin(sd, p + "2", 4, z.iou_hidden)
    return sd


def region_layout(prefix: str, z: Sizes) -> Shapes:
    """MLVLROIQueryModule (layers.py); GLaMM: 4 levels, 5 fuse convs, 14 x 14 RoIs."""
    r = z.region
    e, sd = r["width"], {}
    for i in range(r["levels"]):
        _conv(sd, f"{prefix}mlvl_fuse.input_conv.{i}", e, r["in"] + 2, 1)  # + x, y channels
        _conv(sd, f"{prefix}roi_align.pconvs.{i}", e, e, 3)
    for i in range(r["fuse"]):  # ConvModule(conv without bias, GroupNorm "gn")
        _conv(sd, f"{prefix}mlvl_fuse.fuse_convs.{i}.conv", e, e, 3, bias=False)
        _ln(sd, f"{prefix}mlvl_fuse.fuse_convs.{i}.gn", e)
    p = prefix + "roi_align."
    _lin(sd, p + "pos_embedd.0", r["box"], 4)
    _ln(sd, p + "pos_embedd.2", r["box"])
    _lin(sd, p + "pos_embedd.3", r["hidden"], r["box"])
    _ln(sd, p + "pos_embedd.5", r["hidden"])
    _lin(sd, p + "updims", z.d, r["hidden"])
    _lin(sd, p + "flatten_linear", r["hidden"], e * r["roi"] ** 2)
    return sd


def glamm_state(z: Sizes, seed: int = 0, **layout) -> dict[str, torch.Tensor]:
    """Random tensors in GLaMM's layout (norm weights near 1, so that they count)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in glamm_layout(z, **layout).items():
        if key.endswith("inv_freq"):
            out[key] = torch.ones(shape)
        elif key.endswith("position_ids"):
            out[key] = torch.arange(shape[1])[None]
        elif "norm" in key.rsplit(".", 2)[-2] and key.endswith("weight"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[key] = 0.2 * torch.randn(shape, generator=gen)
    return out


def tiny_glamm(tmp: Path, region_encoder: bool = True):
    """``model=tiny_seg`` with GLaMM's one image branch and Vicuna's untied LM head."""
    cfg = compose_config(
        ["model=tiny_seg", "model.llm.config.tie_word_embeddings=false"], tmp, tmp / "o"
    )
    with open_dict(cfg):
        for part in ("encoders", "adapters"):
            for modality in ("video", "audio"):
                del cfg.model[part][modality]
        if not region_encoder:
            del cfg.model["region_encoder"]
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    return model.eval(), tokenizer


BASE = 512  # the tiny tokenizer's vocabulary
OURS = [*SPECIAL_TOKENS, *PIXEL_TOKENS, REGION_TOKEN]  # build_grounding_model's order
SAME = {"<im_start>": "<im_start>", "<im_end>": "<im_end>", "[SEG]": "[SEG]", "<p>": "<p>"}
SAME |= {"</p>": "</p>", "<bbox>": REGION_TOKEN}  # GLaMM's token -> ours
EMBEDDINGS = {"model.embed_tokens.weight": "llm.model.embed_tokens.weight"}
EMBEDDINGS["lm_head.weight"] = "llm.lm_head.weight"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, tokenizer = tiny_glamm(tmp_path_factory.mktemp("cfg"))
    state = glamm_state(Sizes(), clip_tower=True, buffers=True)
    conversion = convert_glamm(state)
    conversion.check_complete("GLaMM")
    return model, tokenizer, state, conversion


def _check_exact(model, conversion) -> None:
    ours = model.state_dict()
    assert set(conversion.state) == set(ours)  # nothing missing, nothing invented
    wrong = {
        k: (tuple(v.shape), tuple(ours[k].shape))
        for k, v in conversion.state.items()
        if v.shape != ours[k].shape
    }
    assert not wrong


def test_layout_converts_onto_exactly_the_model(setup) -> None:
    model, _, state, conversion = setup
    _check_exact(model, conversion)
    used = set(conversion.sources.values())
    dropped = {k for k in conversion.dropped if k in state}
    assert used | dropped == set(state) and not used & dropped
    assert dropped == {k for k in state if k.endswith(("inv_freq", "position_ids"))}
    rows = set(conversion.dropped) - set(state)  # GLaMM's <point>: no such token here
    assert rows == {f"{key}[{BASE + 3}] (<point>)" for key in EMBEDDINGS}


def test_without_a_region_encoder_its_tensors_are_dropped(tmp_path: Path) -> None:
    model, _ = tiny_glamm(tmp_path, region_encoder=False)
    assert model.region_encoder is None
    state = glamm_state(Sizes(), clip_tower=True)
    conversion = convert_glamm(state, region_encoder=False)
    conversion.check_complete("GLaMM")
    _check_exact(model, conversion)
    region = {k for k in state if k.startswith("model.region_encoder.")}
    assert len(region) == 3 * 2 * 2 + 2 * 3 + 4 * 2 + 2 * 2
    assert all(conversion.dropped[k] == "region encoder not in this model" for k in region)
    assert {k for k in conversion.dropped if k not in state} == {
        f"{key}[{BASE + i}] ({t})" for key in EMBEDDINGS for i, t in ((2, "<bbox>"), (3, "<point>"))
    }


def test_tensors_land_where_the_names_say(setup) -> None:
    _, _, state, conversion = setup
    g, s, o = "model.grounding_encoder.", "pixel_decoder.sam.", conversion.state
    ie, ve = g + "image_encoder.", s + "vision_encoder."
    pe, hp = g + "prompt_encoder.", s + "prompt_encoder."
    md, hm = g + "mask_decoder.", s + "mask_decoder."
    r, hr = "model.region_encoder.", "region_encoder."
    pairs = {
        ie + "blocks.0.attn.qkv.weight": ve + "layers.0.attn.qkv.weight",
        ie + "blocks.1.attn.qkv.bias": ve + "layers.1.attn.qkv.bias",
        ie + "blocks.0.attn.rel_pos_h": ve + "layers.0.attn.rel_pos_h",  # windowed: (7, 16)
        ie + "blocks.1.attn.rel_pos_w": ve + "layers.1.attn.rel_pos_w",  # global: (31, 16)
        ie + "blocks.1.norm2.weight": ve + "layers.1.layer_norm2.weight",
        ie + "patch_embed.proj.weight": ve + "patch_embed.projection.weight",
        ie + "pos_embed": ve + "pos_embed",
        ie + "neck.2.weight": ve + "neck.conv2.weight",
        ie + "neck.3.bias": ve + "neck.layer_norm2.bias",
        pe + "mask_downscaling.3.weight": hp + "mask_embed.conv2.weight",
        pe + "mask_downscaling.4.weight": hp + "mask_embed.layer_norm2.weight",
        pe + "point_embeddings.2.weight": hp + "point_embed.2.weight",
        pe + "pe_layer.positional_encoding_gaussian_matrix": s
        + "shared_image_embedding.positional_embedding",
        md + "transformer.layers.1.norm3.bias": hm + "transformer.layers.1.layer_norm3.bias",
        md + "transformer.norm_final_attn.weight": hm + "transformer.layer_norm_final_attn.weight",
        md + "output_upscaling.1.weight": hm + "upscale_layer_norm.weight",
        md + "output_upscaling.3.weight": hm + "upscale_conv2.weight",
        md + "output_hypernetworks_mlps.2.layers.0.weight": hm
        + "output_hypernetworks_mlps.2.proj_in.weight",
        md + "output_hypernetworks_mlps.2.layers.1.weight": hm
        + "output_hypernetworks_mlps.2.layers.0.weight",
        md + "output_hypernetworks_mlps.3.layers.2.bias": hm
        + "output_hypernetworks_mlps.3.proj_out.bias",
        md + "iou_prediction_head.layers.1.weight": hm + "iou_prediction_head.layers.0.weight",
        md + "iou_prediction_head.layers.2.weight": hm + "iou_prediction_head.proj_out.weight",
        "model.text_hidden_fcs.0.0.weight": "pixel_decoder.seg_projection.0.weight",
        "model.text_hidden_fcs.0.2.bias": "pixel_decoder.seg_projection.2.bias",
        "model.mm_projector.2.weight": "branches.image.adapter.fc2.weight",
        "model.layers.3.self_attn.v_proj.weight": "llm.model.layers.3.self_attn.v_proj.weight",
        r + "mlvl_fuse.input_conv.2.weight": hr + "fuse.input_conv.2.weight",
        r + "mlvl_fuse.fuse_convs.1.gn.bias": hr + "fuse.fuse_convs.1.gn.bias",
        r + "roi_align.pconvs.0.bias": hr + "level_convs.0.bias",
        r + "roi_align.pos_embedd.3.weight": hr + "box_embed.3.weight",
        r + "roi_align.flatten_linear.weight": hr + "roi_proj.weight",
        r + "roi_align.updims.bias": hr + "out_proj.bias",
    }
    for source, target in pairs.items():
        assert torch.equal(o[target], state[source]), (source, target)
    tied = hp + "shared_embedding.positional_embedding"  # tied to the shared one in SamModel
    assert torch.equal(o[tied], state[pe + "pe_layer.positional_encoding_gaussian_matrix"])
    for new, old in conversion.sources.items():  # every other tensor unchanged under its name
        if new not in EMBEDDINGS.values():
            assert torch.equal(o[new], state[old]), (old, new)


def test_token_rows_follow_the_token_strings(setup) -> None:
    _, tokenizer, state, conversion = setup
    assert tokenizer.convert_tokens_to_ids(OURS) == list(range(BASE, BASE + 13))
    for src, dst in EMBEDDINGS.items():
        theirs, ours = state[src], conversion.state[dst]
        assert ours.shape == (BASE + 13, 128)
        assert torch.equal(ours[:BASE], theirs[:BASE])
        for glamm_token, token in SAME.items():
            row = theirs[BASE + GLAMM_TOKEN_ORDER.index(glamm_token)]
            assert torch.equal(ours[tokenizer.convert_tokens_to_ids(token)], row), token
        mean = theirs[:BASE].mean(dim=0)
        for token in ("<im_patch>", "<vi_start>", "<so_end>"):  # tokens GLaMM has not
            torch.testing.assert_close(ours[tokenizer.convert_tokens_to_ids(token)], mean)


@pytest.fixture(scope="module")
def loaded(setup):
    model, _, _, conversion = setup
    model = copy.deepcopy(model)
    model.load_state_dict(conversion.state, strict=True)
    return model


def test_llm_logits_equal_glamms_llm_up_to_the_token_rows(setup, loaded) -> None:
    _, tokenizer, state, _ = setup
    config = LlamaConfig(
        vocab_size=BASE + 7,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    reference = LlamaForCausalLM(config).eval()  # GLaMM's LLM keys are HF Llama's
    llm_keys = ("model.embed_tokens", "model.layers", "model.norm", "lm_head")
    reference.load_state_dict(
        {k: v for k, v in state.items() if k.startswith(llm_keys) and "inv_freq" not in k}
    )
    to_glamm = {
        tokenizer.convert_tokens_to_ids(ours): BASE + GLAMM_TOKEN_ORDER.index(theirs)
        for theirs, ours in SAME.items()
    }
    ours_ids = torch.tensor([[1, 40, *to_glamm, 7, 300]])
    theirs_ids = ours_ids.clone().apply_(lambda i: to_glamm.get(i, i))
    with torch.no_grad():
        ours = loaded.llm(input_ids=ours_ids).logits
        theirs = reference(input_ids=theirs_ids).logits
    columns = list(range(BASE)) + list(to_glamm)
    glamm_columns = list(range(BASE)) + list(to_glamm.values())
    torch.testing.assert_close(ours[..., columns], theirs[..., glamm_columns])


def test_projector_and_seg_projection_equal_glamms(setup, loaded) -> None:
    _, _, sd, _ = setup
    x = torch.randn(2, 16, 64)
    p, f = "model.mm_projector.", "model.text_hidden_fcs.0."
    hidden = F.gelu(F.linear(x, sd[p + "0.weight"], sd[p + "0.bias"]))
    expected = F.linear(hidden, sd[p + "2.weight"], sd[p + "2.bias"])
    h = torch.randn(3, 128)
    seg = F.linear(
        F.relu(F.linear(h, sd[f + "0.weight"], sd[f + "0.bias"])),
        sd[f + "2.weight"],
        sd[f + "2.bias"],
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded.branches["image"].adapter(x), expected)
        torch.testing.assert_close(loaded.pixel_decoder.seg_projection(h), seg)


def test_mask_logits_equal_after_a_round_trip_through_glamms_layout(setup) -> None:
    """Our tiny model's weights, written under GLaMM's names, convert back to the same masks."""
    model, tokenizer, state, conversion = setup
    ours = model.state_dict()
    glamm = dict(state)
    for new, old in conversion.sources.items():
        if old in state and new not in EMBEDDINGS.values():
            glamm[old] = ours[new]
    for src, dst in EMBEDDINGS.items():
        rows = state[src].clone()
        rows[:BASE] = ours[dst][:BASE]
        for theirs, token in SAME.items():
            rows[BASE + GLAMM_TOKEN_ORDER.index(theirs)] = ours[dst][
                tokenizer.convert_tokens_to_ids(token)
            ]
        glamm[src] = rows
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)  # anything not loaded would show
    other.load_state_dict(convert_glamm(glamm).state, strict=True)
    gen = torch.Generator().manual_seed(3)
    pixels = torch.randn(1, 3, 64, 64, generator=gen)
    sam_pixels = torch.randn(1, 3, 64, 64, generator=gen)
    im, patch, end = tokenizer.convert_tokens_to_ids(["<im_start>", "<im_patch>", "<im_end>"])
    p_open, p_close, seg = tokenizer.convert_tokens_to_ids(["<p>", "</p>", "[SEG]"])
    ids = torch.tensor([[1, im, *[patch] * 16, end, 40, 41, p_open, 50, p_close, seg, 60, seg, 2]])
    masks = []
    for m in (model, other):
        with torch.no_grad():
            out = m(ids, torch.ones_like(ids), {"image": pixels}, hidden_states=True)
            masks.append(m.predict_masks(out.hidden_states[-1], ids, sam_pixels, [2])[0])
    assert masks[0].shape == (2, 64, 64)
    torch.testing.assert_close(masks[1], masks[0])


def test_sam_equals_metas_sam_on_the_same_weights(setup, loaded) -> None:
    """Meta's segment_anything modules (GLaMM's vendored copy) vs our SamModel after conversion."""
    sa = pytest.importorskip("segment_anything.modeling")
    z = Sizes()
    torch.manual_seed(5)
    sam = sa.Sam(
        image_encoder=sa.ImageEncoderViT(
            img_size=z.sam_image,
            patch_size=z.sam_patch,
            embed_dim=z.sam_w,
            depth=z.sam_layers,
            num_heads=z.sam_heads,
            mlp_ratio=z.sam_mlp / z.sam_w,
            out_chans=z.prompt,
            qkv_bias=True,
            norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
            use_rel_pos=True,
            window_size=z.window,
            global_attn_indexes=z.global_attn,
        ),
        prompt_encoder=sa.PromptEncoder(
            embed_dim=z.prompt,
            image_embedding_size=(16, 16),
            input_image_size=(64, 64),
            mask_in_chans=z.mask_in_chans,
        ),
        mask_decoder=sa.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sa.TwoWayTransformer(
                depth=z.dec_layers, embedding_dim=z.prompt, mlp_dim=z.dec_mlp, num_heads=2
            ),
            transformer_dim=z.prompt,
            iou_head_depth=3,
            iou_head_hidden_dim=z.iou_hidden,
        ),
    ).eval()
    with torch.no_grad():  # SAM zero-inits rel_pos; make every tensor count
        for p in sam.parameters():
            p.add_(0.05 * torch.randn_like(p))
    original = {"model.grounding_encoder." + k: v for k, v in sam.state_dict().items()}
    hand = sam_layout("model.grounding_encoder.", z)
    original = {k: v for k, v in original.items() if not k.endswith(("pixel_mean", "pixel_std"))}
    assert {k: tuple(v.shape) for k, v in original.items()} == hand  # the layout written by hand
    sam_conv = sam_rules("model.grounding_encoder.", "pixel_decoder.sam.").apply(original)
    sam_conv.check_complete("SAM")
    decoder = copy.deepcopy(loaded.pixel_decoder)
    state = {k.removeprefix("pixel_decoder."): v for k, v in sam_conv.state.items()}
    state["sam.prompt_encoder.shared_embedding.positional_embedding"] = state[
        "sam.shared_image_embedding.positional_embedding"
    ]
    missing = decoder.load_state_dict(state, strict=False)
    assert set(missing.missing_keys) == {
        "seg_projection.0.weight",
        "seg_projection.0.bias",
        "seg_projection.2.weight",
        "seg_projection.2.bias",
    }
    assert not missing.unexpected_keys
    gen = torch.Generator().manual_seed(4)
    pixels = torch.randn(2, 3, 64, 64, generator=gen)
    hidden = torch.randn(3, 128, generator=gen)  # the LLM's states before three [SEG]
    with torch.no_grad():
        theirs = sam.image_encoder(pixels)
        ours = decoder.embed_images(pixels)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
        ours_masks = decoder(ours, [hidden[:0], hidden])  # image 0: no [SEG]
        # GLaMM._generate_and_postprocess_masks for image 1, up to postprocess_masks
        prompts = decoder.seg_projection(hidden)  # text_hidden_fcs (checked above)
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        sparse = torch.cat([sparse.expand(3, -1, -1), prompts[:, None]], dim=1)
        low_res, _ = sam.mask_decoder(
            image_embeddings=theirs[1:2],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense.expand(3, -1, -1, -1),
            multimask_output=False,
        )
    assert ours_masks[0].shape == (0, 64, 64) and ours_masks[1].shape == (3, 64, 64)
    torch.testing.assert_close(ours_masks[1], low_res[:, 0], atol=1e-4, rtol=1e-4)


def test_unknown_key_fails_with_its_name() -> None:
    state = glamm_state(Sizes())
    state["model.grounding_encoder.image_encoder.blocks.0.attn.lora_A.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"unknown layout.*blocks\.0\.attn\.lora_A\.weight"):
        convert_glamm(state).check_complete("GLaMM")
    state = glamm_state(Sizes())
    state["model.region_encoder.roi_align.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"roi_align\.extra\.weight"):
        convert_glamm(state).check_complete("GLaMM")


def _write_release(folder: Path, state: dict[str, torch.Tensor], order: list[str]) -> None:
    """Two safetensors shards with an index, added_tokens.json and config.json."""
    folder.mkdir()
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for name, part in shards.items():
        save_file({k: state[k].contiguous() for k in part}, str(folder / name))
    weight_map = {k: name for name, part in shards.items() for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "added_tokens.json").write_text(
        json.dumps({t: BASE + i for i, t in enumerate(order)})
    )
    (folder / "config.json").write_text(json.dumps({"hidden_size": 128, "out_dim": 32}))


def test_cli_converts_a_sharded_release_into_a_loadable_checkpoint(setup, tmp_path: Path) -> None:
    model, tokenizer, _, _ = setup
    order = GLAMM_TOKEN_ORDER[::-1]  # the release's tokenizer files win over the default order
    state = glamm_state(Sizes(), seed=7, clip_tower=True)
    clip = {
        k.removeprefix("model.vision_tower.vision_tower."): state.pop(k)
        for k in list(state)
        if k.startswith("model.vision_tower.")
    }
    _write_release(tmp_path / "glamm", state, order)
    save_file(clip, str(tmp_path / "clip.safetensors"))
    out = tmp_path / "out" / "glamm.safetensors"
    main(["glamm", str(tmp_path / "glamm"), str(out), "--clip", str(tmp_path / "clip.safetensors")])
    target = copy.deepcopy(model)
    load_weights(target, out, strict=True)
    emb = target.llm.get_input_embeddings().weight
    seg = tokenizer.convert_tokens_to_ids("[SEG]")
    assert torch.equal(emb[seg], state["model.embed_tokens.weight"][BASE + order.index("[SEG]")])
    vision = target.branches["image"].encoder.model.state_dict()
    assert torch.equal(
        next(v for k, v in vision.items() if k.endswith("embeddings.class_embedding")),
        clip["vision_model.embeddings.class_embedding"],
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["dropped"]) | set(report["sources"].values()) >= set(state)
    assert report["token_rows"]["<point>"]["ours"] is None
    assert report["token_rows"]["<region>"]["glamm"] == BASE + order.index("<bbox>")
    assert report["token_rows"]["<im_patch>"]["glamm"] is None


def test_cli_refuses_an_unknown_key(tmp_path: Path) -> None:
    state = glamm_state(Sizes())
    state["model.mask_head.weight"] = torch.zeros(2)
    _write_release(tmp_path / "glamm", state, GLAMM_TOKEN_ORDER)
    with pytest.raises(ValueError, match=r"model\.mask_head\.weight"):
        main(["glamm", str(tmp_path / "glamm"), str(tmp_path / "o.safetensors")])


def test_glamm_config_differences_are_listed(tmp_path: Path) -> None:
    from groundinggpt.convert.glamm import REFERENCE_CONFIG, check_glamm_config

    assert check_glamm_config(tmp_path) == []
    (tmp_path / "config.json").write_text(json.dumps(REFERENCE_CONFIG | {"out_dim": 512}))
    assert check_glamm_config(tmp_path) == ["out_dim: release 512, model=glamm_7b 256"]


def test_sizes_default_to_the_toy_model() -> None:
    assert replace(Sizes()).d == 128 and GLAMM_7B.vocab == 32007


def test_region_renames_agree_with_the_region_encoders_own_table(setup) -> None:
    from groundinggpt.models.region_encoder import GLAMM_NAMES

    _, _, _, conversion = setup
    for new, old in conversion.sources.items():
        if old.startswith("model.region_encoder."):
            key = old.removeprefix("model.region_encoder.")
            (prefix,) = [p for p in GLAMM_NAMES if key.startswith(p)]
            assert new == "region_encoder." + GLAMM_NAMES[prefix] + key[len(prefix) :]
