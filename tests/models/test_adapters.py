from __future__ import annotations

import pytest
import torch
from torch import nn

from groundinggpt.models.adapters import (
    AudioQFormerAdapter,
    MLPAdapter,
    QFormer,
    QFormerAdapter,
    VideoQFormerAdapter,
)
from groundinggpt.models.encoders import BlipVideoEncoder, ClipImageEncoder, ImageBindAudioEncoder

VIDEO_TINY = dict(
    in_dim=24,
    max_frames=6,
    num_query_tokens=5,
    num_layers=2,
    num_heads=2,
    intermediate_size=48,
    out_dim=40,
)
AUDIO_TINY = dict(
    in_dim=16,
    max_clips=4,
    num_query_tokens=3,
    hidden_size=24,
    num_layers=2,
    num_heads=2,
    intermediate_size=48,
    out_dim=40,
)


def _randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def video_adapter() -> QFormerAdapter:
    torch.manual_seed(0)
    return VideoQFormerAdapter(**VIDEO_TINY).eval()


@pytest.fixture
def audio_adapter() -> QFormerAdapter:
    torch.manual_seed(0)
    return AudioQFormerAdapter(**AUDIO_TINY).eval()


# ------------------------------------------------------------------------------------ shapes


def test_mlp_adapter_shape_and_tokens() -> None:
    torch.manual_seed(0)
    adapter = MLPAdapter(in_dim=16, out_dim=32)
    assert adapter(_randn(2, 9, 16)).shape == (2, 9, 32)
    assert adapter.out_dim == 32 and adapter.num_tokens(576) == 576
    assert [type(m) for m in adapter.children()] == [nn.Linear, nn.GELU, nn.Linear]


def test_video_adapter_shape_and_tokens(video_adapter: QFormerAdapter) -> None:
    with torch.no_grad():
        assert video_adapter(_randn(2, 4, 3, 24)).shape == (2, 5, 40)
        assert video_adapter(_randn(1, 6, 3, 24)).shape == (1, 5, 40)
    assert video_adapter.out_dim == 40 and video_adapter.num_tokens(32) == 5


def test_audio_adapter_shape_and_tokens(audio_adapter: QFormerAdapter) -> None:
    with torch.no_grad():
        assert audio_adapter(_randn(2, 3, 16)).shape == (2, 3, 40)
    assert audio_adapter.out_dim == 40 and audio_adapter.num_tokens(1) == 3


def test_qformer_cross_attends_every_layer_in_adapters(video_adapter: QFormerAdapter) -> None:
    layers = video_adapter.qformer.model.encoder.layer
    assert all(layer.has_cross_attention for layer in layers)


def test_qformer_rejects_heads_not_dividing_width() -> None:
    with pytest.raises(ValueError, match="multiple"):
        QFormer(4, hidden_size=30, num_heads=4, encoder_hidden_size=8)


# ------------------------------------------------------------------------------ bad inputs


def test_video_adapter_raises_on_too_many_frames(video_adapter: QFormerAdapter) -> None:
    with pytest.raises(ValueError, match="7 frames.*at most 6"):
        video_adapter(torch.zeros(1, 7, 3, 24))


def test_audio_adapter_raises_on_too_many_clips(audio_adapter: QFormerAdapter) -> None:
    with pytest.raises(ValueError, match="5 clips.*at most 4"):
        audio_adapter(torch.zeros(1, 5, 16))


def test_adapters_reject_wrong_rank(
    video_adapter: QFormerAdapter, audio_adapter: QFormerAdapter
) -> None:
    with pytest.raises(ValueError, match=r"\(B, T, Q, D\)"):
        video_adapter(torch.zeros(2, 3, 24))
    with pytest.raises(ValueError, match=r"\(B, C, D\)"):
        audio_adapter(torch.zeros(2, 3, 1, 16))


# -------------------------------------------------------------------------- masks, positions


def test_video_mask_equals_dropping_the_padded_frames(video_adapter: QFormerAdapter) -> None:
    frames = _randn(2, 5, 3, 24)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        masked = video_adapter(frames, mask=mask)
        short = video_adapter(frames[:1, :3])
        full = video_adapter(frames[1:])
    torch.testing.assert_close(masked[:1], short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[1:], full, atol=1e-5, rtol=1e-5)


def test_audio_mask_equals_dropping_the_padded_clips(audio_adapter: QFormerAdapter) -> None:
    clips = _randn(2, 4, 16)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        masked = audio_adapter(clips, mask=mask)
        short = audio_adapter(clips[:1, :2])
    torch.testing.assert_close(masked[:1], short, atol=1e-5, rtol=1e-5)


def test_video_adapter_sees_frame_order(video_adapter: QFormerAdapter) -> None:
    frames = _randn(1, 4, 3, 24)
    with torch.no_grad():
        forward = video_adapter(frames)
        backward = video_adapter(frames.flip(1))
    assert not torch.allclose(forward, backward, atol=1e-4)


# ------------------------------------------------------------------------------- gradients


def _assert_all_grads(module: nn.Module) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert any(p.grad.abs().sum() > 0 for p in module.parameters())


def test_adapters_train_on_top_of_frozen_encoders() -> None:
    torch.manual_seed(0)
    image_enc = ClipImageEncoder(
        image_size=28, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32
    ).eval()
    video_enc = BlipVideoEncoder(
        image_size=28,
        vit_width=16,
        vit_depth=1,
        vit_heads=2,
        num_query_tokens=3,
        qformer_hidden_size=24,
        qformer_layers=1,
        qformer_heads=2,
        qformer_intermediate_size=32,
    ).eval()
    audio_enc = ImageBindAudioEncoder(embed_dim=16, depth=1, num_heads=2, out_dim=16).eval()
    adapters = {
        "image": MLPAdapter(in_dim=16, out_dim=40),
        "video": VideoQFormerAdapter(**VIDEO_TINY),
        "audio": AudioQFormerAdapter(**AUDIO_TINY),
    }
    with torch.no_grad():
        features = {
            "image": image_enc(_randn(2, 3, 28, 28)),
            "video": video_enc(_randn(2, 3, 3, 28, 28)),
            "audio": audio_enc(_randn(2, 2, 1, 128, 204)),
        }
    loss = sum(adapters[k](features[k]).square().mean() for k in adapters)
    loss.backward()
    for adapter in adapters.values():
        _assert_all_grads(adapter)
    for encoder in (image_enc, video_enc, audio_enc):
        assert all(p.grad is None for p in encoder.parameters())


# ------------------------------------------------------------------------- real-size counts


def _qformer_params(h: int, layers: int, inter: int, enc: int, queries: int) -> int:
    def attention(kv: int) -> int:
        return (h * h + h) + 2 * (kv * h + h) + (h * h + h) + 2 * h  # q, k/v, out, LN

    ffn = (h * inter + inter) + (inter * h + h) + 2 * h
    return 2 * h + queries * h + layers * (attention(h) + attention(enc) + ffn)


def test_real_size_parameter_counts() -> None:
    with torch.device("meta"):
        mlp, video, audio = MLPAdapter(), VideoQFormerAdapter(), AudioQFormerAdapter()
    assert _count(mlp) == (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
    video_qformer = _qformer_params(768, 2, 3072, 768, 64)
    assert _count(video) == 64 * 768 + video_qformer + 768 * 4096 + 4096
    audio_qformer = _qformer_params(768, 2, 3072, 1024, 8)
    assert _count(audio) == 8 * 1024 + audio_qformer + 768 * 4096 + 4096
    assert video.num_tokens() == 64 and audio.num_tokens() == 8


def test_one_qformer_adapter_class_serves_video_and_audio(video_adapter, audio_adapter) -> None:
    assert type(video_adapter) is type(audio_adapter) is QFormerAdapter
    assert {"frame_position_embedding.weight"} <= set(video_adapter.state_dict())
    assert {"clip_position_embedding.weight"} <= set(audio_adapter.state_dict())


def test_linear_adapter_is_one_projection() -> None:
    """depth=1 (the adapter ablation's linear projector): affine in its input, fc1 only."""
    torch.manual_seed(0)
    linear = MLPAdapter(in_dim=8, out_dim=16, depth=1)
    a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    zero = torch.zeros(2, 3, 8)
    assert torch.allclose(linear(a + b), linear(a) + linear(b) - linear(zero), atol=1e-5)
    assert set(linear.state_dict()) == {"fc1.weight", "fc1.bias"}
    mlp = MLPAdapter(in_dim=8, out_dim=16)  # the default: not affine
    assert not torch.allclose(mlp(a + b), mlp(a) + mlp(b) - mlp(zero), atol=1e-3)
    with pytest.raises(ValueError, match="depth"):
        MLPAdapter(in_dim=8, out_dim=16, depth=3)
