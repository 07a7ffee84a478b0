"""``train.py``'s body: instantiate -> fit -> (test) -> report, straight through; or a chain
of such runs (``chain:``, e.g. ``experiment=toy_full``), each from the weights of the one before."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
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


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Fit (and optionally test) the configured model; returns the final logged metrics.

    A config with a ``chain`` runs its stages instead (`train_chain`); ``overrides`` (the
    command line's) then apply to every stage.
    """
    if cfg.get("chain"):
        return train_chain(cfg, overrides)
    L.seed_everything(cfg.seed, workers=True)
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    ckpt_path = resume_path(cfg.get("ckpt_path"), cfg.get("allow_remote_checkpoints", False))
    module, datamodule, trainer = build(cfg)
    # weights_only: a checkpoint holds tensors and plain containers; pickled code never runs
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _last_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FileNotFoundError(f"the stage in {run_dir} wrote no checkpoint to chain from")
    return ckpts[-1]


def train_chain(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Run ``cfg.chain``'s stages in order, each from the last checkpoint of the one before.

    ``cfg.chain`` maps a stage's name (its folder under ``paths.output_dir``) to the overrides
    that compose it, e.g. ``{stage1: [experiment=stage1_pretrain], stage2: [...]}``; the
    command line's ``overrides`` follow each stage's own (so ``seed=1`` or
    ``paths.data_dir=...`` reach every stage). The first stage starts from ``cfg.init_from``.
    Writes ``chain.json`` (each stage's folder, checkpoint and final metrics) and ``curves.png``
    (all stages' validation curves on one step axis, stage boundaries marked) in
    ``paths.output_dir``; returns the last stage's ``metrics.json``.
    """
    from hydra import compose

    from groundinggpt.utils.visualize import plot_curves

    out = Path(cfg.paths.output_dir)
    previous = cfg.get("init_from")
    user = [  # the experiment is the chain itself; Hydra's own settings are not a stage's
        o for o in overrides if not o.lstrip("+~").startswith(("experiment=", "hydra.", "chain"))
    ]
    history: list[dict[str, float]] = []
    baselines: dict[str, float] = {}
    boundaries: list[tuple[float, str]] = []
    stages: dict[str, dict[str, Any]] = {}
    metrics: dict[str, float] = {}
    offset = 0.0
    for name, stage_overrides in cfg.chain.items():
        stage_dir = out / str(name)
        args = [*stage_overrides, *user, f"paths.output_dir={stage_dir}"]
        if previous is not None:
            args.append(f"init_from={previous}")
        log.info("chain: stage %s (%s)", name, " ".join(args))
        stage_cfg = compose("train", overrides=args)
        if stage_cfg.get("chain"):
            raise ValueError(f"chain stage {name!r} composes another chain: give it an experiment")
        (stage_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(stage_cfg, stage_dir / ".hydra" / "config.yaml")
        train(stage_cfg)
        metrics = json.loads((stage_dir / "metrics.json").read_text())  # the stage's record
        previous = _last_checkpoint(stage_dir)
        stages[str(name)] = {"dir": str(stage_dir), "checkpoint": str(previous), "metrics": metrics}
        curves = stage_dir / "curves.json"
        for point in json.loads(curves.read_text()) if curves.exists() else []:
            history.append({**point, "step": point["step"] + offset})
        baselines |= {k: v for k, v in metrics.items() if k.startswith("baseline/")}
        boundaries.append((offset, str(name)))
        offset += metrics.get("trainer/global_step", 0.0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chain.json").write_text(json.dumps(stages, indent=2))
    plot_curves(history, baselines, out / "curves.png", boundaries=boundaries)
    return metrics
