"""Demo fixtures: the demo config on the tiny random-weights model, one shared loaded model."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict
from tests.conftest import compose_config


@pytest.fixture(scope="session")
def demo_cfg(tiny_weights, tiny_data_dir, tmp_path_factory) -> DictConfig:
    """``configs/demo.yaml`` on the tiny checkpoint and the tiny synthetic dataset, on the CPU."""
    root = tmp_path_factory.mktemp("demo")
    overrides = [
        f"ckpt_path={tiny_weights.ckpt}",
        "assistant.device=cpu",
        "assistant.generation.max_new_tokens=8",
        "server_port=0",
    ]
    cfg = compose_config(overrides, root, root / "run", config_name="demo")
    with open_dict(cfg):
        cfg.data.root = str(tiny_data_dir)
    return cfg


@pytest.fixture(scope="session")
def chat_factory(demo_cfg):
    """A new `GroundingChat` per call, all on one model loaded once (as `demo.launch` does)."""
    from groundinggpt.demo import chat_factory_from_config

    return chat_factory_from_config(demo_cfg)


@pytest.fixture(scope="session")
def synthetic_image(tiny_data_dir) -> Path:
    """A rec test image of the tiny synthetic dataset."""
    return sorted((tiny_data_dir / "images").glob("rec_test_*.png"))[0]


@pytest.fixture()
def broken_image(tmp_path) -> Path:
    """A ``.png`` that is not an image."""
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not a png at all" * 10)
    return path
