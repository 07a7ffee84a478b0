"""Every experiment and trainer config composes, and the parts instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

from tests.conftest import CONFIG_DIR, compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
TRAINERS = sorted(
    p.stem for p in (Path(CONFIG_DIR) / "trainer").glob("*.yaml") if p.stem != "default"
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, make_cfg):
    from groundinggpt.train import build

    cfg = make_cfg([f"experiment={experiment}"])
    if cfg.chain:  # a chain (toy_full): each of its stages is an experiment of its own
        for name, overrides in cfg.chain.items():
            stage = make_cfg(list(overrides))
            assert stage.stage.name == stage.data.train_stage == name and not stage.chain
        return
    # Variants (stage2_fine_learn) reuse their stage: the name starts with it.
    assert cfg.data.train_stage == cfg.stage.name and experiment.startswith(cfg.stage.name)
    module, dm, trainer = build(cfg)
    dm.setup()
    assert len(dm.datasets["train"]) > 0 and len(dm.datasets["val"]) == len(cfg.data.val) > 0
    assert module.trainable_counts["adapter.image"] > 0
    assert module.trainable_counts["encoder.image"] == 0


@pytest.mark.parametrize("name", TRAINERS)
def test_trainer_configs_compose(name, tmp_path):
    cfg = compose_config([f"trainer={name}"], tmp_path, tmp_path / "out")
    assert cfg.trainer._target_ == "lightning.pytorch.trainer.Trainer"
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, dict) or hasattr(strategy, "_target_"):
        if "DeepSpeed" in strategy._target_:
            pytest.importorskip("deepspeed")
        obj = hydra.utils.instantiate(strategy)
        assert type(obj).__name__ in strategy._target_


def test_expected_experiments_exist():
    assert {"stage1_pretrain", "stage2_fine", "stage3_instruct"} <= set(EXPERIMENTS)


def test_real_size_model_config_composes(tmp_path):
    cfg = compose_config(["model=groundinggpt_7b", "tokenizer=vicuna"], tmp_path, tmp_path / "o")
    assert "media_tokens" not in cfg.model  # derived from the encoders and adapters
    assert cfg.model.adapters.image.out_dim == 4096


def test_replay_ablation_sweeps_ratio_and_seed(tmp_path):
    from hydra import compose, initialize_config_dir

    overrides = [f"paths.root_dir={tmp_path}", "hparams_search=replay_ablation"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["data.replay_ratio"].split(",")[0] == "0" and params["seed"] == "42,1,2"
    # One run dir per job, named after what the job changes.
    assert cfg.hydra.sweep.subdir == f"replay{cfg.data.replay_ratio}_seed{cfg.seed}"
