"""``model=glamm_7b`` (GLaMM-GranD-f's architecture) from its Hydra config, on the meta device.

Every parameter count is derived here from the architecture definitions (groundingLMM's
``build_sam_vit_h``, ``LlavaMetaModel``, ``GLaMMBaseModel``, ``MLVLROIQueryModule``; CLIP
ViT-L/14-336; Vicuna-7B), and GLaMM's checkpoint layout at full size (written from its code
in tests/convert/test_glamm.py) converts onto exactly this model's keys and shapes.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from tests.conftest import compose_config
from tests.convert.test_glamm import GLAMM_7B, glamm_layout
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from groundinggpt.convert.glamm import convert_glamm

VOCAB, D, LAYERS, MLP = 32000, 4096, 32, 11008
ADDED = 9 + 3 + 1  # modality start/patch/end x 3, [SEG] <p> </p>, <region>


def _vicuna_sized_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    cfg = compose_config(["model=glamm_7b", "model/llm=vicuna_7b_skeleton"], tmp, Path(tmp) / "o")
    with torch.device("meta"):
        return hydra.utils.instantiate(
            cfg.model, tokenizer=_vicuna_sized_tokenizer(), _convert_="partial"
        )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def test_only_the_image_branch_with_pixel_decoder_and_region_encoder(model) -> None:
    assert list(model.branches) == ["image"]
    assert model.media_tokens == {"image": 576}  # 336 / 14 = 24 x 24 patches
    assert model.pixel_decoder is not None and model.region_encoder is not None
    assert model.seg_token_id == VOCAB + 9 and model.pixel_token_ids == [VOCAB + 9, 32010, 32011]
    assert model.region_token_id == VOCAB + 12


def test_llm_is_vicuna_7b_with_thirteen_new_rows(model) -> None:
    llm = model.llm
    layer = 4 * D * D + 3 * D * MLP + 2 * D  # q k v o, gate up down, two RMSNorms
    vocab = VOCAB + ADDED
    assert _count(llm) == 2 * vocab * D + LAYERS * layer + D == 6_738_522_112
    assert 2 * VOCAB * D + LAYERS * layer + D == 6_738_415_616  # Vicuna-7B itself
    assert llm.get_input_embeddings().weight.shape == (vocab, D)
    assert llm.get_output_embeddings().weight.shape == (vocab, D)


def test_clip_and_projector(model) -> None:
    branch = model.branches["image"]
    w, n = 1024, 24 * 24 + 1
    embeddings = 3 * 14 * 14 * w + w + n * w  # patch conv (no bias), class token, positions
    layer = 4 * _linear(w, w) + 2 * 2 * w + _linear(w, 4 * w) + _linear(4 * w, w)
    assert _count(branch.encoder) == embeddings + 2 * w + 24 * layer + 2 * w == 303_507_456
    assert (branch.encoder.num_tokens, branch.encoder.select_layer) == (576, -2)
    assert _count(branch.adapter) == _linear(w, D) + _linear(D, D) == 20_979_712


def _sam_vit_h_image_encoder() -> int:
    w, head, grid, window = 1280, 1280 // 16, 64, 14
    block = 2 * 2 * w + _linear(w, 3 * w) + _linear(w, w) + _linear(w, 4 * w) + _linear(4 * w, w)
    rel_pos = [2 * (2 * (grid if i in (7, 15, 23, 31) else window) - 1) * head for i in range(32)]
    neck = 256 * w + 2 * 256 + 256 * 256 * 9 + 2 * 256  # 1x1 and 3x3 convs without bias
    return _linear(3 * 16 * 16, w) + grid * grid * w + 32 * block + sum(rel_pos) + neck


def _sam_mask_decoder(c: int = 256) -> int:
    def attention(internal: int) -> int:
        return 3 * _linear(c, internal) + _linear(internal, c)

    block = attention(c) + 2 * attention(c // 2) + 4 * 2 * c + _linear(c, 2048) + _linear(2048, c)
    transformer = 2 * block + attention(c // 2) + 2 * c
    upscaling = (c * (c // 4) * 4 + c // 4) + 2 * (c // 4) + ((c // 4) * (c // 8) * 4 + c // 8)
    hyper = 4 * (2 * _linear(c, c) + _linear(c, c // 8))
    iou = 2 * _linear(c, c) + _linear(c, 4)
    return c + 4 * c + transformer + upscaling + hyper + iou  # iou_token, mask_tokens


def test_sam_vit_h_pixel_decoder(model) -> None:
    sam = model.pixel_decoder.sam
    image_encoder = _sam_vit_h_image_encoder()
    assert _count(sam.vision_encoder) == image_encoder == 637_026_048
    assert image_encoder - 64 * 64 * 1280 == 631_783_168  # the "632M" quoted for SAM ViT-H
    assert _count(sam.shared_image_embedding) == 2 * 128  # random Fourier features
    # 2x2 convs 1 -> 4 -> 16 (stride 2), LayerNorm2d after each, 1x1 conv 16 -> 256
    mask_downscaling = _linear(1 * 2 * 2, 4) + 2 * 4 + _linear(4 * 2 * 2, 16) + 2 * 16
    mask_downscaling += _linear(16, 256)
    prompt = 4 * 256 + 256 + 256 + mask_downscaling  # 4 point embeddings, not-a-point, no-mask
    own = sum(
        p.numel()
        for n, p in sam.prompt_encoder.named_parameters(remove_duplicate=False)
        if not n.startswith("shared_embedding.")
    )
    assert own == prompt == 6_220
    assert _count(sam.mask_decoder) == _sam_mask_decoder() == 4_058_340
    seg = model.pixel_decoder.seg_projection
    assert _count(seg) == 4096 * 4096 + 4096 + 4096 * 256 + 256 == 17_830_144


def test_region_encoder(model) -> None:
    e, levels, hidden = 1024, 4, 1024
    fuse = levels * _linear(e + 2, e) + 5 * (e * e * 9 + 2 * e)  # 1x1 in, 3x3 + GroupNorm
    pooled = levels * _linear(e * 9, e) + _linear(e * 14 * 14, hidden)  # 3x3 per level, flatten
    box = _linear(4, 256) + 2 * 256 + _linear(256, hidden) + 2 * hidden
    total = fuse + pooled + box + _linear(hidden, D)
    assert _count(model.region_encoder) == total == 299_142_912


def test_glamm_layout_converts_onto_exactly_this_model(model) -> None:
    with torch.device("meta"):
        release = {k: torch.empty(s) for k, s in glamm_layout(GLAMM_7B, clip_tower=True).items()}
    g = "model.grounding_encoder.image_encoder."
    assert release[g + "pos_embed"].shape == (1, 64, 64, 1280)
    assert release[g + "blocks.7.attn.rel_pos_h"].shape == (127, 80)  # global attention
    assert release[g + "blocks.0.attn.rel_pos_h"].shape == (27, 80)  # 14 x 14 windows
    assert release["model.text_hidden_fcs.0.0.weight"].shape == (D, D)
    assert release["model.text_hidden_fcs.0.2.weight"].shape == (256, D)
    assert release["model.mm_projector.0.weight"].shape == (D, 1024)
    assert release["model.embed_tokens.weight"].shape == (VOCAB + 7, D)
    conversion = convert_glamm(release)
    conversion.check_complete("GLaMM-7B layout")
    ours = model.state_dict()
    assert set(conversion.state) == set(ours)
    wrong = {
        k: (tuple(v.shape), tuple(ours[k].shape))
        for k, v in conversion.state.items()
        if v.shape != ours[k].shape
    }
    assert not wrong
    s = conversion.sources
    assert s["pixel_decoder.sam.vision_encoder.pos_embed"] == g + "pos_embed"
    assert s["pixel_decoder.seg_projection.2.weight"] == "model.text_hidden_fcs.0.2.weight"
    assert ours["pixel_decoder.sam.vision_encoder.pos_embed"].shape == (1, 64, 64, 1280)
    assert set(conversion.dropped) == {
        f"{k}[32003] (<point>)" for k in ("model.embed_tokens.weight", "lm_head.weight")
    }


def test_glamm_lora_stage(tmp_path: Path) -> None:
    cfg = compose_config(["model=glamm_7b", "stage=glamm_lora"], tmp_path, tmp_path / "o")
    spec = cfg.stage.trainable
    assert cfg.stage.name == "stage2_fine" and cfg.stage.lr == 3.0e-4
    assert (spec.llm, spec.encoders, spec.adapters) == ("lora", "frozen", "frozen")
    assert dict(spec.lora) == {
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
    }
    assert (spec.pixel_decoder, spec.pixel_encoder) == ("full", "frozen")
    assert spec.new_token_embeddings == "all"  # every row of embed_tokens and lm_head


def test_glamm_lora_stage_trains_what_glamm_trains(tmp_path: Path) -> None:
    """On the toy GLaMM: LoRA A/B of q_proj and v_proj, the new token rows, SAM's mask
    decoder and the [SEG] projection; CLIP, the projector and SAM's encoders stay frozen."""
    from omegaconf import OmegaConf
    from tests.convert.test_glamm import tiny_glamm

    from groundinggpt.training.trainability import apply_trainability

    cfg = compose_config(["stage=glamm_lora"], tmp_path, tmp_path / "o")
    model, _ = tiny_glamm(tmp_path)
    counts = apply_trainability(model, **OmegaConf.to_container(cfg.stage.trainable))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    assert lora and all(("q_proj" in n or "v_proj" in n) for n in lora)
    assert len(lora) == 2 * 2 * 4  # A and B, q and v, 4 layers
    llm = {n for n in trainable if n.startswith("llm.")} - lora
    assert llm == {n for n in llm if n.endswith(("embed_tokens.weight", "lm_head.weight"))}
    assert counts["encoder.image"] == counts["adapter.image"] == 0
    sam = model.pixel_decoder.sam
    assert not any(p.requires_grad for p in sam.vision_encoder.parameters())
    assert not any(p.requires_grad for p in sam.prompt_encoder.parameters())
    assert all(p.requires_grad for p in sam.mask_decoder.parameters())
    assert all(p.requires_grad for p in model.pixel_decoder.seg_projection.parameters())
    # GLaMM trains its region encoder too; `trainable` has no switch for it and leaves it on
    assert all(p.requires_grad for p in model.region_encoder.parameters())
