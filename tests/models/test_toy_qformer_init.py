"""The toy model's random Q-Formers pass their input on (a stand-in for trained BLIP-2 weights).

At toy width (64) BERT's 0.02 init leaves a random Q-Former's outputs almost equal to its
queries whatever it reads: the frozen video branch then tells the LLM nearly nothing about a
video and time spans cannot be learned (experiments/2026-12-06_toy_qformer_init/). The toy
configs use the fan-in scale instead; this guards that choice.
"""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import DictConfig
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> DictConfig:
    """The ``model=tiny`` config, as train.py composes it."""
    tmp = tmp_path_factory.mktemp("toy_init")
    return compose_config(["model=tiny"], tmp, tmp / "run").model


def _between_sample_share(x: torch.Tensor) -> float:
    """Share of the output variance that differs between samples (dim 0)."""
    return float(x.var(0).mean() / x.flatten(0, -2).var(0).mean())


def _video_encoder(model: DictConfig, **init) -> torch.nn.Module:
    torch.manual_seed(0)
    return hydra.utils.instantiate(model.encoders.video, **init).eval()


def _videos(n: int = 12, frames: int = 4, size: int = 64) -> torch.Tensor:
    """Plain light frames, each video with one dark square of its own place and size."""
    torch.manual_seed(1)
    v = torch.full((n, frames, 3, size, size), 0.8)
    for i in range(n):
        x, s = int(torch.randint(0, size // 2, ())), int(torch.randint(12, size // 2, ()))
        v[i, :, :, x : x + s, x : x + s] = 0.1
    return v


@torch.no_grad()
def test_the_toy_video_branch_depends_on_the_video(tiny) -> None:
    features = _video_encoder(tiny)(_videos())
    adapter = hydra.utils.instantiate(tiny.adapters.video, out_dim=32).eval()
    # measured: 0.0098 and 0.0073 (with BERT's 0.02 init: 1.5e-6)
    assert _between_sample_share(features) > 2e-3
    assert _between_sample_share(adapter(features)) > 2e-3


@torch.no_grad()
def test_bert_init_at_toy_width_would_hide_the_video(tiny) -> None:
    videos = _videos()
    hidden = _between_sample_share(_video_encoder(tiny, qformer_initializer_range=0.02)(videos))
    assert hidden < 1e-4
    assert hidden < 0.01 * _between_sample_share(_video_encoder(tiny)(videos))


@pytest.mark.parametrize("branch", ["video", "audio"])
def test_toy_adapters_use_the_fan_in_scale(tiny, branch: str) -> None:
    ad = hydra.utils.instantiate(tiny.adapters[branch], out_dim=32)
    hidden = ad.qformer.out_dim
    assert ad.qformer.model.config.initializer_range == pytest.approx(hidden**-0.5)
