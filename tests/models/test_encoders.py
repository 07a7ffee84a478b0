from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel, CLIPVisionConfig, CLIPVisionModel

from groundinggpt.models.encoders import BlipVideoEncoder, ClipImageEncoder, ImageBindAudioEncoder
from groundinggpt.models.imagebind_audio import ImageBindAudioEncoder as AudioFromModule

CLIP_TINY = dict(
    image_size=28, patch_size=14, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64
)
VIDEO_TINY = dict(
    image_size=28,
    patch_size=14,
    vit_width=32,
    vit_depth=2,
    vit_heads=2,
    vit_mlp_ratio=2.0,
    num_query_tokens=4,
    qformer_hidden_size=24,
    qformer_layers=2,
    qformer_heads=2,
    qformer_intermediate_size=48,
    cross_attention_frequency=2,
)


def _images(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _hf_clip_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=28,
        patch_size=14,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
    )


# ------------------------------------------------------------------------------------ CLIP


def test_clip_shape_and_attributes() -> None:
    torch.manual_seed(0)
    enc = ClipImageEncoder(**CLIP_TINY).eval()
    with torch.no_grad():
        out = enc(_images(2, 3, 28, 28))
    assert out.shape == (2, 4, 32)
    assert enc.out_dim == 32 and enc.num_tokens == 4


@pytest.mark.parametrize("select_layer", [-2, -1, 1])
def test_clip_equals_hf_hidden_states(select_layer: int) -> None:
    torch.manual_seed(0)
    enc = ClipImageEncoder(**CLIP_TINY, select_layer=select_layer).eval()
    reference = CLIPVisionModel(_hf_clip_config()).eval()
    reference.load_state_dict(enc.model.state_dict())
    pixels = _images(2, 3, 28, 28)
    with torch.no_grad():
        expected = reference(pixel_values=pixels, output_hidden_states=True)
        torch.testing.assert_close(enc(pixels), expected.hidden_states[select_layer][:, 1:])


def test_clip_loads_pretrained(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = CLIPVisionModel(_hf_clip_config()).eval()
    saved.save_pretrained(tmp_path)
    enc = ClipImageEncoder(**CLIP_TINY, pretrained=str(tmp_path)).eval()
    pixels = _images(1, 3, 28, 28)
    with torch.no_grad():
        expected = saved(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(enc(pixels), expected)


def test_clip_pretrained_with_other_size_raises(tmp_path: Path) -> None:
    CLIPVisionModel(_hf_clip_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_hidden_layers: config 2 vs checkpoint 3"):
        ClipImageEncoder(**{**CLIP_TINY, "num_layers": 2}, pretrained=str(tmp_path))


def test_clip_rejects_bad_input_and_layer() -> None:
    enc = ClipImageEncoder(**CLIP_TINY)
    with pytest.raises(ValueError, match="S=28"):
        enc(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="select_layer"):
        ClipImageEncoder(**CLIP_TINY, select_layer=-5)


# ----------------------------------------------------------------------------- BLIP-2 video


@pytest.fixture
def video_encoder() -> BlipVideoEncoder:
    torch.manual_seed(0)
    return BlipVideoEncoder(**VIDEO_TINY).eval()


def test_video_shape_and_attributes(video_encoder: BlipVideoEncoder) -> None:
    with torch.no_grad():
        out = video_encoder(_images(2, 3, 3, 28, 28))
    assert out.shape == (2, 3, 4, 24)
    assert video_encoder.out_dim == 24 and video_encoder.num_tokens == 4


def test_video_equals_manual_lavis_pipeline(video_encoder: BlipVideoEncoder) -> None:
    """EVA tokens (CLS kept, no final norm) -> ln_vision -> Q-Former reading them."""
    frames = _images(2, 3, 3, 28, 28)
    vit = video_encoder.visual_encoder
    qformer = Blip2QFormerModel(
        Blip2QFormerConfig(
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            cross_attention_frequency=2,
            encoder_hidden_size=32,
        )
    ).eval()
    qformer.load_state_dict(video_encoder.qformer.model.state_dict())
    with torch.no_grad():
        x = vit.patch_embed(frames.flatten(0, 1))  # (6, 4, 32)
        x = torch.cat([vit.cls_token.expand(6, -1, -1), x], dim=1) + vit.pos_embed
        for block in vit.blocks:
            x = block(x)
        x = video_encoder.ln_vision(x)
        queries = video_encoder.qformer.query_tokens.expand(6, -1, -1)
        expected = qformer(query_embeds=queries, encoder_hidden_states=x).last_hidden_state
        torch.testing.assert_close(video_encoder(frames), expected.view(2, 3, 4, 24))


def test_video_frames_are_encoded_independently(video_encoder: BlipVideoEncoder) -> None:
    frames = _images(2, 3, 3, 28, 28)
    with torch.no_grad():
        batched = video_encoder(frames)
        single = video_encoder(frames[1:, 2:])
    torch.testing.assert_close(batched[1:, 2:], single, atol=1e-5, rtol=1e-5)


def test_video_rejects_bad_input(video_encoder: BlipVideoEncoder) -> None:
    with pytest.raises(ValueError, match=r"frames \(B, T, 3, S, S\)"):
        video_encoder(torch.zeros(3, 3, 28, 28))


def test_eva_parameter_names_follow_lavis() -> None:
    enc = BlipVideoEncoder(**{**VIDEO_TINY, "vit_depth": 1})
    names = set(enc.visual_encoder.state_dict())
    block = {
        "norm1.weight",
        "norm1.bias",
        "attn.q_bias",
        "attn.v_bias",
        "attn.qkv.weight",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    }
    top = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    assert names == top | {f"blocks.0.{n}" for n in block}


# ------------------------------------------------------------------------- real-size counts


def _qformer_params(h: int, layers: int, inter: int, enc: int, freq: int, queries: int) -> int:
    def attention(kv: int) -> int:
        return (h * h + h) + 2 * (kv * h + h) + (h * h + h) + 2 * h  # q, k/v, out, LN

    ffn = (h * inter + inter) + (inter * h + h) + 2 * h
    cross = sum(attention(enc) for i in range(layers) if i % freq == 0)
    return 2 * h + queries * h + layers * (attention(h) + ffn) + cross


def test_real_clip_vit_l14_336_parameter_count() -> None:
    w, layers, mlp, n = 1024, 24, 4096, (336 // 14) ** 2
    embeddings = 3 * 14 * 14 * w + w + (n + 1) * w  # conv (no bias), CLS, positions
    layer = 4 * (w * w + w) + 4 * w + (w * mlp + mlp) + (mlp * w + w)
    expected = embeddings + 2 * w + layers * layer + 2 * w  # + pre/post LayerNorm
    with torch.device("meta"):
        enc = ClipImageEncoder()
    assert sum(p.numel() for p in enc.parameters()) == expected == 303_507_456
    assert enc.num_tokens == 576 and enc.out_dim == 1024


def test_real_eva_g_qformer_parameter_count() -> None:
    w, depth, n = 1408, 39, (224 // 14) ** 2
    hidden = int(w * 4.3637)
    assert hidden == 6144
    block = 2 * w + 3 * w * w + 2 * w + (w * w + w) + 2 * w + (w * hidden + hidden)
    block += hidden * w + w
    eva = (3 * 14 * 14 * w + w) + w + (n + 1) * w + depth * block
    qformer = _qformer_params(768, 12, 3072, w, 2, 32)
    with torch.device("meta"):
        enc = BlipVideoEncoder()
    assert sum(p.numel() for p in enc.visual_encoder.parameters()) == eva == 985_894_528
    assert sum(p.numel() for p in enc.qformer.parameters()) == qformer == 105_162_240
    assert sum(p.numel() for p in enc.parameters()) == eva + 2 * w + qformer


def test_audio_encoder_is_reexported() -> None:
    assert ImageBindAudioEncoder is AudioFromModule
