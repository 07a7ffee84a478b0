"""The toy model's random Q-Formers pass their input on (a stand-in for trained BLIP-2 weights).

At toy width (64) BERT's 0.02 init leaves a random Q-Former's outputs almost equal to its
queries whatever it reads: the frozen video branch then tells the LLM nearly nothing about a
video and time spans cannot be learned (experiments/2026-12-06_toy_qformer_init/). The toy
configs use the fan-in scale instead; this guards that choice.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

import groundinggpt.configs

CONFIGS = str(Path(groundinggpt.configs.__file__).parent)


def _between_sample_share(x: torch.Tensor) -> float:
    """Share of the output variance that differs between samples (dim 0)."""
    return float(x.var(0).mean() / x.flatten(0, -2).var(0).mean())


def _video_branch(**encoder_init):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny"])
    torch.manual_seed(0)
    enc = hydra.utils.instantiate(cfg.model.encoders.video, **encoder_init).eval()
    ad = hydra.utils.instantiate(cfg.model.adapters.video, out_dim=32).eval()
    return enc, ad


def _videos(n: int = 12, frames: int = 4, size: int = 64) -> torch.Tensor:
    """Plain light frames, each video with one dark square of its own place and size."""
    torch.manual_seed(1)
    v = torch.full((n, frames, 3, size, size), 0.8)
    for i in range(n):
        x, s = int(torch.randint(0, size // 2, ())), int(torch.randint(12, size // 2, ()))
        v[i, :, :, x : x + s, x : x + s] = 0.1
    return v


@torch.no_grad()
def test_the_toy_video_branch_depends_on_the_video() -> None:
    enc, ad = _video_branch()
    features = enc(_videos())
    # measured: 0.0098 and 0.0073 (with BERT's 0.02 init: 1.5e-6)
    assert _between_sample_share(features) > 2e-3
    assert _between_sample_share(ad(features)) > 2e-3


@torch.no_grad()
def test_bert_init_at_toy_width_would_hide_the_video() -> None:
    enc, _ = _video_branch()
    small, _ = _video_branch(qformer_initializer_range=0.02)
    hidden = _between_sample_share(small(_videos()))
    assert hidden < 1e-4
    assert hidden < 0.01 * _between_sample_share(enc(_videos()))


@pytest.mark.parametrize("name", ["video_qformer_tiny", "audio_qformer_tiny"])
def test_toy_adapters_use_the_fan_in_scale(name: str) -> None:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny"])
    branch = "video" if name.startswith("video") else "audio"
    ad = hydra.utils.instantiate(cfg.model.adapters[branch], out_dim=32)
    hidden = ad.qformer.out_dim
    assert ad.qformer.model.config.initializer_range == pytest.approx(hidden**-0.5)
