"""Smoke fits of every stage on the tiny config, and the stage chain through ``init_from``."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import open_dict

from groundinggpt.train import build, train
from groundinggpt.training.checkpoint import read_state_dict

METRIC_KEYS = [
    "val/rec/acc@0.5",
    "val/vtg/r1@0.3",
    "val/vtg/r1@0.5",
    "val/vtg/r1@0.7",
    "val/vtg/miou",
    "val/sl/acc@0.5",
    "val/pope/accuracy",
    "val/pope/precision",
    "val/pope/recall",
    "val/pope/f1",
    "val/pope/yes_ratio",
]


def _checkpoint(run_dir):
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts, f"no checkpoint in {run_dir}"
    return ckpts[-1]


def test_stage_chain_through_init_from(make_cfg, tmp_path):
    """stage1 -> stage2 -> stage3, each starting from the previous stage's weights."""
    previous = None
    for stage in ("stage1_pretrain", "stage2_fine", "stage3_instruct"):
        overrides = [f"experiment={stage}"]
        if previous is not None:
            overrides.append(f"init_from={previous}")
        cfg = make_cfg(overrides, output=stage)
        with open_dict(cfg):
            cfg.data.eval_batch_size = 16  # one batch of all four val tasks
        train(cfg)
        run_dir = tmp_path / stage
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert set(METRIC_KEYS) <= set(metrics), sorted(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS)
        assert metrics["skipped/total"] == 0
        # stage 1 trains on captions only, so it has no training targets for a baseline
        assert ("baseline/val/rec/acc@0.5" in metrics) == (stage != "stage1_pretrain")
        # each task's teacher-forced answer loss beside the pooled one (random init: ~ln 512)
        task_losses = [metrics[f"val/{t}/loss"] for t in ("rec", "vtg", "sl", "pope")]
        assert all(0.0 < x < 20.0 for x in task_losses)
        assert min(task_losses) <= metrics["val/loss"] <= max(task_losses)
        assert (run_dir / "predictions.png").stat().st_size > 0
        ckpt = _checkpoint(run_dir)
        if previous is not None:
            # the frozen encoders were loaded from the previous stage and never moved
            before, after = read_state_dict(previous), read_state_dict(ckpt)
            key = next(k for k in before if k.startswith("branches.image.encoder."))
            assert torch.equal(before[key], after[key])
        previous = ckpt


def test_init_from_with_wrong_keys_fails_loudly(make_cfg, tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"model.nonsense": torch.zeros(1)}}, bad)
    cfg = make_cfg(["experiment=stage2_fine", f"init_from={bad}"])
    with pytest.raises((KeyError, InstantiationException), match="missing keys"):
        train(cfg)


def test_resume_from_ckpt_path_continues_the_step_count(make_cfg, tmp_path):
    cfg = make_cfg(["experiment=stage2_fine"], output="first")
    train(cfg)
    ckpt = _checkpoint(tmp_path / "first")
    cfg = make_cfg(["experiment=stage2_fine", f"ckpt_path={ckpt}"], output="resumed")
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
    train(cfg)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4  # 2 steps restored + 2 new ones


def test_every_run_draws_its_learning_curves(make_cfg, tmp_path):
    cfg = make_cfg(["experiment=stage2_fine"], output="curves")
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
    train(cfg)
    run = tmp_path / "curves"
    history = json.loads((run / "curves.json").read_text())
    assert [h["step"] for h in history] == [2.0, 4.0]  # one point per validation run
    assert all("val/rec/acc@0.5" in h for h in history)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/rec/count"] > 0  # samples behind each number, and their p-value
    assert 0.0 <= metrics["val/rec/p_value"] <= 1.0
    from PIL import Image

    assert Image.open(run / "curves.png").size[0] > 500  # one panel per task


def test_toy_full_chains_the_three_stages_in_one_run(tiny_data_dir, tmp_path):
    """experiment=toy_full: each stage in its own folder, from the checkpoint before it."""
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf
    from tests.conftest import CONFIG_DIR, compose_config

    # what a user would type after experiment=toy_full: it must reach every stage
    user = [
        f"paths.root_dir={tmp_path}",
        f"data.root={tiny_data_dir}",
        "data.synthetic=null",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.eval_batch_size=16",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "module.generation.max_new_tokens=4",
        "seed=7",
    ]
    out = tmp_path / "toy_full"
    cfg = compose_config(["experiment=toy_full", *user], tmp_path, out)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        final = train(cfg, ["experiment=toy_full", *user])
    chain = json.loads((out / "chain.json").read_text())
    assert list(chain) == ["stage1_pretrain", "stage2_fine", "stage3_instruct"]
    previous = None
    for name, stage in chain.items():
        run = out / name
        stage_cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert stage_cfg.seed == 7 and stage_cfg.trainer.max_epochs == 1  # the user's options
        assert stage_cfg.stage.name == name  # each stage its own experiment
        assert stage_cfg.init_from == previous  # from the stage before
        assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 2
        assert stage["checkpoint"] == str(_checkpoint(run))
        previous = stage["checkpoint"]
    # stage 3's gentler learning rate and stage 1's feature cache come from toy_full itself
    assert OmegaConf.load(out / "stage3_instruct/.hydra/config.yaml").stage.lr == 2.0e-4
    assert OmegaConf.load(out / "stage1_pretrain/.hydra/config.yaml").module.feature_cache
    assert final["trainer/global_step"] == 2  # the last stage's metrics
    assert (out / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("search", ["image_tokens", "video_frames", "adapter"])
def test_every_point_of_an_ablation_sweep_trains(make_cfg, tmp_path, search):
    """Each value an hparams_search sweeps (seeds aside) builds a consistent model and fits."""
    from hydra import compose, initialize_config_dir
    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        sweep = compose(
            "train",
            overrides=[f"paths.root_dir={tmp_path}", f"hparams_search={search}"],
            return_hydra_config=True,
        ).hydra.sweeper.params
    assert sweep["seed"] == "42,1,2"  # three seeds per point
    (key, values), *rest = [(k, v) for k, v in sweep.items() if k != "seed"]
    assert not rest
    runs = {}
    for value in values.split(","):
        cfg = make_cfg(["experiment=stage2_fine", f"{key}={value}"], output=f"{search}{value}")
        with open_dict(cfg):
            cfg.trainer.limit_val_batches = 0
        train(cfg)
        metrics = json.loads((tmp_path / f"{search}{value}" / "metrics.json").read_text())
        assert metrics["trainer/global_step"] == 2
        runs[value] = read_state_dict(_checkpoint(tmp_path / f"{search}{value}"))
        if search == "video_frames":  # the clips the model gets have that many frames
            _, datamodule, _ = build(cfg)
            datamodule.setup("validate")
            batch = next(b for b in datamodule.val_dataloader() if "video" in b["media"])
            assert batch["media"]["video"].shape[1] == int(value)
    if search == "image_tokens":  # 64 px in 16 or 8 px patches: 16 or 64 positions
        position = "branches.image.encoder.model.embeddings.position_embedding.weight"
        assert {v: s[position].shape[0] for v, s in runs.items()} == {"16": 17, "8": 65}
    if search == "adapter":  # the linear projector has no second layer
        assert {v: "branches.image.adapter.fc2.weight" in s for v, s in runs.items()} == {
            "2": True,
            "1": False,
        }


def test_replay_ablation_reports_forgetting_of_stage1_captions(make_cfg, tmp_path):
    """hparams_search=replay_ablation validates on held-out captions: val/*_caption/loss."""
    cfg = make_cfg(["experiment=stage2_fine", "hparams_search=replay_ablation"], output="replay")
    assert {"image_caption_val", "video_caption_val", "audio_caption_val"} <= set(cfg.data.val)
    with open_dict(cfg):  # the shared tiny dataset has no caption val split: its own, as tiny
        cfg.data.root = str(tmp_path / "data")
        for task in ("image_caption", "video_caption", "audio_caption"):
            cfg.data.synthetic.sizes[task]["val"] = 4
        cfg.data.eval_batch_size = 32  # every validation sample in one batch
    train(cfg)
    metrics = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    for modality in ("image", "video", "audio"):  # teacher-forced, on captions not trained on
        assert 0.0 < metrics[f"val/{modality}_caption/loss"] < 20.0
    assert metrics["val/rec/count"] > 0  # the grounding tasks are still validated beside it
