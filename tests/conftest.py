"""Shared fixtures: the real Hydra config, shrunk to seconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def compose_config(
    overrides: list[str], root: Path, output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` the way the CLI does, with paths under ``root``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[f"paths.root_dir={root}", f"paths.output_dir={output_dir}", *overrides],
        )
    return cfg


def synthetic_eval_config(
    ckpt: Path, data_dir: Path, tasks: tuple[str, ...], tmp: Path, output: str = "eval"
) -> DictConfig:
    """The eval.py config for ``ckpt`` on the tiny synthetic test files of ``tasks``."""
    files = ",".join(str(data_dir / "annotations" / f"{t}_test.json") for t in tasks)
    overrides = [
        f"ckpt_path={ckpt}",
        f"benchmark.annotation_file=[{files}]",
        f"benchmark.media_dir={data_dir}",
        "benchmark.max_new_tokens=4",
        "datamodule.num_workers=0",
    ]
    return compose_config(overrides, tmp, tmp / output, "eval")


def shrink(cfg: DictConfig, data_dir: Path) -> DictConfig:
    """A few tiny batches of everything, on the shared tiny synthetic dataset."""
    from groundinggpt.data.synthetic import uniform_sizes

    with open_dict(cfg):
        cfg.data.root = str(data_dir)
        cfg.data.synthetic.sizes = uniform_sizes(8, 4, 4)
        cfg.data.num_workers = 0
        cfg.data.batch_size = 4
        cfg.data.eval_batch_size = 8
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = 2
        cfg.trainer.limit_val_batches = 1
        cfg.trainer.limit_test_batches = 1
        cfg.trainer.enable_model_summary = False
        cfg.module.generation.max_new_tokens = 6
    return cfg


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A tiny synthetic dataset generated once per test session."""
    from groundinggpt.data.synthetic import ensure_synthetic, uniform_sizes

    root = tmp_path_factory.mktemp("synthetic") / "data"
    ensure_synthetic(root, sizes=uniform_sizes(8, 4, 4), progress=False, num_workers=1)
    return root


@pytest.fixture()
def make_cfg(tmp_path, tiny_data_dir):
    """``make_cfg(["experiment=stage1_pretrain"])`` -> a shrunk config writing under tmp_path."""

    def _make(overrides: list[str], output: str = "run") -> DictConfig:
        cfg = compose_config(overrides, tmp_path, tmp_path / output)
        return shrink(cfg, tiny_data_dir)

    return _make


@pytest.fixture(scope="session")
def tokenizer():
    from groundinggpt.data.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> SimpleNamespace:
    """Random weights of the default tiny model, saved once in both checkpoint formats.

    ``.ckpt`` is laid out like a Lightning checkpoint from ``train.py``; ``.safetensors`` like a
    converted release. Both hold the same tensors (seed 0).
    """
    import hydra
    import torch

    from groundinggpt.convert.io import save

    root = tmp_path_factory.mktemp("tiny_weights")
    cfg = compose_config(["ckpt_path=unused"], root, root / "run", config_name="eval")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    ckpt, safetensors = root / "tiny.ckpt", root / "tiny.safetensors"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, ckpt)
    save(state, safetensors, {})  # tied embeddings: written once per key
    return SimpleNamespace(ckpt=ckpt, safetensors=safetensors)
