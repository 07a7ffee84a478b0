"""The adapters' optional output LayerNorm (``out_norm``): MLP and Q-Former alike."""

from __future__ import annotations

import torch
from torch import nn

from groundinggpt.models.adapters import AudioQFormerAdapter, MLPAdapter, VideoQFormerAdapter


def _features(seed: int = 0) -> torch.Tensor:
    # Large, offset features like a random CLIP's hidden states (token norm ~10).
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(2, 9, 16, generator=g) + 1.0  # (B, N, in_dim)


def test_out_norm_off_keeps_the_reference_projector() -> None:
    torch.manual_seed(0)
    adapter = MLPAdapter(in_dim=16, out_dim=32)
    assert adapter.norm is None
    assert set(adapter.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_out_norm_sets_the_output_scale() -> None:
    torch.manual_seed(0)
    plain = MLPAdapter(in_dim=16, out_dim=32)
    torch.manual_seed(0)
    normed = MLPAdapter(in_dim=16, out_dim=32, out_norm=0.02)
    x = _features()
    with torch.no_grad():
        raw, out = plain(x), normed(x)
    # Same MLP weights; only the final LayerNorm differs.
    torch.testing.assert_close(normed.fc2.weight, plain.fc2.weight)
    rms = out.pow(2).mean(-1).sqrt()  # (B, N)
    torch.testing.assert_close(rms, torch.full_like(rms, 0.02), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 9), rtol=0, atol=1e-6)
    assert raw.pow(2).mean(-1).sqrt().min() > 0.1  # the un-normed output is far larger


def test_out_norm_gain_learns() -> None:
    torch.manual_seed(0)
    adapter = MLPAdapter(in_dim=16, out_dim=32, out_norm=0.02)
    assert isinstance(adapter.norm, nn.LayerNorm)
    adapter(_features()).pow(2).sum().backward()
    assert adapter.norm.weight.grad is not None and adapter.norm.weight.grad.abs().sum() > 0
    assert adapter.fc1.weight.grad.abs().sum() > 0


def test_qformer_adapters_out_norm_sets_the_scale_and_off_keeps_their_keys() -> None:
    kw = {"num_query_tokens": 4, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    video = {"in_dim": 16, "max_frames": 4, **kw, "out_dim": 32}
    audio = {"in_dim": 16, "max_clips": 4, "hidden_size": 16, **kw, "out_dim": 32}
    for factory, spec, x in (
        (VideoQFormerAdapter, video, 3.0 * torch.randn(2, 3, 5, 16)),
        (AudioQFormerAdapter, audio, 3.0 * torch.randn(2, 3, 16)),
    ):
        torch.manual_seed(0)
        plain = factory(**spec)
        torch.manual_seed(0)
        normed = factory(**spec, out_norm=0.02)
        assert plain.norm is None and not any(k.startswith("norm.") for k in plain.state_dict())
        with torch.no_grad():
            raw, out = plain(x), normed(x)
        rms = out.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.full_like(rms, 0.02), rtol=1e-3, atol=1e-5)
        assert raw.pow(2).mean(-1).sqrt().min() > 0.1
