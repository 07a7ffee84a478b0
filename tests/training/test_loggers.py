"""Every ``configs/logger`` option trains through ``train()`` and writes ``train/loss`` to disk."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import hydra
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, open_dict
from tests.conftest import compose_config

from groundinggpt.train import train


@pytest.fixture()
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline and silent, with every folder it writes to under ``tmp_path``."""
    wandb = pytest.importorskip("wandb")
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(home / "dir"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield wandb
    wandb.finish()  # a run left open would be reused by the next WandbLogger


def _train_logging_every_step(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.trainer.log_every_n_steps = 1  # the shrunk run has only 2 steps
    train(cfg)


def _tensorboard_scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, f"no tensorboard events file under {run_dir / 'tensorboard'}"
    scalars: dict[str, list[float]] = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return scalars


def test_csv_logger_writes_train_loss(make_cfg, tmp_path) -> None:
    _train_logging_every_step(make_cfg(["experiment=stage2_fine", "logger=csv"]))
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as f:
        losses = [row["train/loss"] for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 2 and all(float(v) > 0 for v in losses)


def test_tensorboard_logger_writes_train_loss(make_cfg, tmp_path) -> None:
    _train_logging_every_step(make_cfg(["experiment=stage2_fine", "logger=tensorboard"]))
    scalars = _tensorboard_scalars(tmp_path / "run")
    assert "train/loss" in scalars, sorted(scalars)
    assert len(scalars["train/loss"]) == 2 and all(v > 0 for v in scalars["train/loss"])
    assert "val/loss" in scalars


def _settled_bytes(path: Path, marker: bytes, timeout_s: float = 30.0) -> bytes:
    """The file's bytes once ``marker`` is in them: wandb's service process may still be
    writing the run file right after ``finish()`` on a loaded machine (seen in CI-like runs)."""
    deadline = time.monotonic() + timeout_s
    data = path.read_bytes()
    while marker not in data and time.monotonic() < deadline:
        time.sleep(0.5)
        data = path.read_bytes()
    return data


def test_wandb_logger_writes_an_offline_run(make_cfg, tmp_path, offline_wandb) -> None:
    cfg = make_cfg(["experiment=stage2_fine", "logger=wandb"])
    assert cfg.logger.wandb.offline is True  # the default needs no network or account
    _train_logging_every_step(cfg)
    offline_wandb.finish()  # flush the run file
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, sorted((tmp_path / "run").rglob("*"))
    files = sorted(runs[0].glob("*.wandb"))
    assert len(files) == 1
    data = _settled_bytes(files[0], b"val/loss")
    assert b"train/loss" in data and b"val/loss" in data
    assert b"stage2_fine" in data  # the run is named after task_name


def test_loggers_combine_as_a_list(tmp_path, offline_wandb) -> None:
    """``logger=[csv,tensorboard,wandb]``: each file is keyed by its name, so they merge."""
    cfg = compose_config(["logger=[csv,tensorboard,wandb]"], tmp_path, tmp_path / "run")
    assert list(cfg.logger) == ["csv", "tensorboard", "wandb"]
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()]
    assert [type(x) for x in loggers] == [CSVLogger, TensorBoardLogger, WandbLogger]
    assert Path(loggers[1].log_dir).parent == tmp_path / "run" / "tensorboard"
