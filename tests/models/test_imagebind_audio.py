from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from groundinggpt.convert.components import convert_imagebind_audio_state_dict
from groundinggpt.models.imagebind_audio import ImageBindAudioEncoder

TINY = dict(embed_dim=32, depth=2, num_heads=2, out_dim=24)
M, L, K, S = 128, 204, 16, 10


@pytest.fixture
def encoder() -> ImageBindAudioEncoder:
    torch.manual_seed(0)
    return ImageBindAudioEncoder(**TINY).eval()


def _clips(b: int = 2, c: int = 3) -> torch.Tensor:
    return torch.randn(b, c, 1, M, L, generator=torch.Generator().manual_seed(1))


def _original_audio_shapes(d: int, depth: int, out_dim: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ImageBind's audio branch, written from imagebind_model.py."""
    patches = ((M - K) // S + 1) * ((L - K) // S + 1)
    pre, trunk, head = (
        "modality_preprocessors.audio.",
        "modality_trunks.audio.",
        "modality_heads.audio.",
    )
    shapes: dict[str, tuple[int, ...]] = {
        pre + "cls_token": (1, 1, d),
        pre + "rgbt_stem.proj.weight": (d, 1, K, K),
        pre + "rgbt_stem.norm_layer.weight": (d,),
        pre + "rgbt_stem.norm_layer.bias": (d,),
        pre + "pos_embedding_helper.pos_embed": (1, patches + 1, d),
        head + "0.weight": (d,),
        head + "0.bias": (d,),
        head + "2.weight": (out_dim, d),
    }
    for i in range(depth):
        blk = f"{trunk}blocks.{i}."
        shapes.update(
            {
                blk + "attn.in_proj_weight": (3 * d, d),
                blk + "attn.in_proj_bias": (3 * d,),
                blk + "attn.bias_k": (1, 1, d),
                blk + "attn.bias_v": (1, 1, d),
                blk + "attn.out_proj.weight": (d, d),
                blk + "attn.out_proj.bias": (d,),
                blk + "norm_1.weight": (d,),
                blk + "norm_1.bias": (d,),
                blk + "mlp.fc1.weight": (4 * d, d),
                blk + "mlp.fc1.bias": (4 * d,),
                blk + "mlp.fc2.weight": (d, 4 * d),
                blk + "mlp.fc2.bias": (d,),
                blk + "norm_2.weight": (d,),
                blk + "norm_2.bias": (d,),
            }
        )
    return shapes


def _reference_forward(enc: ImageBindAudioEncoder, clips: torch.Tensor) -> torch.Tensor:
    """ImageBind's audio path re-derived with functional ops, in its (L, N, D) layout."""
    b, c = clips.shape[:2]
    pe = enc.patch_embed
    x = F.conv2d(clips.flatten(0, 1), pe.proj.weight, stride=S).flatten(2).transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], pe.norm.weight, pe.norm.bias, eps=1e-5)
    x = torch.cat([enc.cls_token.expand(x.shape[0], -1, -1), x], 1) + enc.pos_embed
    x = x.transpose(0, 1)  # (L, N, D)
    d = x.shape[-1]
    for blk in enc.blocks:
        h = F.layer_norm(x, (d,), blk.norm_1.weight, blk.norm_1.bias, eps=1e-6)
        a = blk.attn
        attn, _ = F.multi_head_attention_forward(
            h,
            h,
            h,
            d,
            a.num_heads,
            a.in_proj_weight,
            a.in_proj_bias,
            a.bias_k,
            a.bias_v,
            False,
            0.0,
            a.out_proj.weight,
            a.out_proj.bias,
            training=False,
            need_weights=False,
        )
        x = x + attn
        h = F.layer_norm(x, (d,), blk.norm_2.weight, blk.norm_2.bias, eps=1e-6)
        x = x + F.linear(
            F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)),
            blk.mlp.fc2.weight,
            blk.mlp.fc2.bias,
        )
    cls = F.layer_norm(x[0], (d,), enc.head_norm.weight, enc.head_norm.bias, eps=1e-6)
    emb = F.linear(cls, enc.head_proj.weight)
    return (20.0 * emb / emb.norm(dim=-1, keepdim=True)).view(b, c, -1)


def test_output_shape_and_attributes(encoder: ImageBindAudioEncoder) -> None:
    with torch.no_grad():
        out = encoder(_clips(2, 3))
    assert out.shape == (2, 3, 24)
    assert encoder.out_dim == 24 and encoder.num_tokens == 1
    assert encoder.num_patches == 12 * 19  # (128-16)//10+1 by (204-16)//10+1
    assert encoder.pos_embed.shape == (1, 229, 32)


def test_forward_matches_functional_reference(encoder: ImageBindAudioEncoder) -> None:
    clips = _clips()
    with torch.no_grad():
        torch.testing.assert_close(encoder(clips), _reference_forward(encoder, clips))


def test_patch_embedding_equals_independent_conv(encoder: ImageBindAudioEncoder) -> None:
    fbank = _clips(1, 2).flatten(0, 1)  # (2, 1, M, L)
    weight = encoder.patch_embed.proj.weight.reshape(32, K * K)  # (D, K*K)
    windows = F.unfold(fbank, kernel_size=K, stride=S)  # (2, K*K, P), patches row-major
    assert windows.shape[-1] == 12 * 19
    expected = torch.einsum("nkp,dk->npd", windows, weight)  # (2, P, D)
    expected = F.layer_norm(
        expected, (32,), encoder.patch_embed.norm.weight, encoder.patch_embed.norm.bias
    )
    with torch.no_grad():
        torch.testing.assert_close(encoder.patch_embed(fbank), expected, atol=1e-4, rtol=1e-4)


def test_postprocess_norm_equals_logit_scale(encoder: ImageBindAudioEncoder) -> None:
    with torch.no_grad():
        out = encoder(_clips())
        scaled = encoder.postprocess(torch.randn(5, 24) * 7)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((2, 3), 20.0))
    torch.testing.assert_close(scaled.norm(dim=-1), torch.full((5,), 20.0))


def test_clips_are_encoded_independently(encoder: ImageBindAudioEncoder) -> None:
    clips = _clips(2, 3)
    with torch.no_grad():
        batched = encoder(clips)
        single = encoder(clips[1:, 2:])
    torch.testing.assert_close(batched[1:, 2:], single, atol=1e-5, rtol=1e-5)


def test_parameter_names_follow_imagebind(encoder: ImageBindAudioEncoder) -> None:
    original = _original_audio_shapes(32, 2, 24)
    fake = {k: torch.randn(shape) for k, shape in original.items()}
    fake["modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(math.log(20.0))
    fake["modality_trunks.vision.blocks.0.norm_1.weight"] = torch.ones(7)  # other modality
    converted = convert_imagebind_audio_state_dict(fake)
    ours = encoder.state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)
    encoder.load_state_dict(converted, strict=True)
    torch.testing.assert_close(encoder.cls_token, fake["modality_preprocessors.audio.cls_token"])


def test_convert_rejects_state_dict_without_audio() -> None:
    with pytest.raises(ValueError, match="audio"):
        convert_imagebind_audio_state_dict({"modality_trunks.vision.blocks.0.x": torch.ones(1)})


def test_drop_path_grows_to_configured_rate() -> None:
    enc = ImageBindAudioEncoder(**TINY, drop_path=0.1)
    assert isinstance(enc.blocks[0].drop_path, torch.nn.Identity)
    assert enc.blocks[-1].drop_path.drop_prob == pytest.approx(0.1)


@pytest.mark.parametrize("shape", [(2, 1, M, L), (2, 3, 1, M, L - 1), (2, 3, 2, M, L)])
def test_bad_input_shape_raises(encoder: ImageBindAudioEncoder, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="fbank clips"):
        encoder(torch.zeros(shape))


def test_real_size_parameter_count() -> None:
    d, depth, out, hidden = 768, 12, 1024, 4 * 768
    stem = d * K * K + 2 * d  # conv without bias + LayerNorm
    tokens = d + (12 * 19 + 1) * d  # cls + pos_embed
    attn = 3 * d * d + 3 * d + 2 * d + d * d + d  # in_proj, bias_k/v, out_proj
    block = attn + 4 * d + d * hidden + hidden + hidden * d + d
    head = 2 * d + d * out
    with torch.device("meta"):
        enc = ImageBindAudioEncoder()
    count = sum(p.numel() for p in enc.parameters())
    assert count == stem + tokens + depth * block + head == 86_235_648
