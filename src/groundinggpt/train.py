"""``train.py``'s body: instantiate -> fit -> (test) -> report, straight through."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from groundinggpt.build import build_datamodule, build_model
from groundinggpt.training.checkpoint import resume_path

log = logging.getLogger(__name__)


def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    return [hydra.utils.instantiate(c) for c in (cfg or {}).values() if c is not None]


def build(cfg: DictConfig) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """Build the LightningModule, DataModule and Trainer that ``cfg`` describes."""
    model, tokenizer = build_model(cfg, "init_from")  # the previous stage's weights, if any
    module = hydra.utils.instantiate(cfg.module, model=model, tokenizer=tokenizer)
    datamodule = build_datamodule(cfg.data, model, tokenizer)
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=_instantiate_dict(cfg.get("callbacks")),
        logger=_instantiate_dict(cfg.get("logger")),
    )
    return module, datamodule, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) the configured model; returns the final logged metrics."""
    L.seed_everything(cfg.seed, workers=True)
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    ckpt_path = resume_path(cfg.get("ckpt_path"), cfg.get("allow_remote_checkpoints", False))
    module, datamodule, trainer = build(cfg)
    # weights_only: a checkpoint holds tensors and plain containers; pickled code never runs
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
