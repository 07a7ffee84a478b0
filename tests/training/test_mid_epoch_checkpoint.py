"""``callbacks.model_checkpoint.every_n_train_steps=N`` from the command line: mid-epoch
checkpoints of the real model, and a resume from one trains on exactly the unseen samples."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from groundinggpt.train import build

STEP_CKPTS = [
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.model_checkpoint.filename='s{step}'",
]


class _Seen(Callback):
    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids += [f"{d}/{i}" for d, i in zip(batch["dataset"], batch["id"], strict=True)]


def _fit(make_cfg, output: str, extra: list[str]) -> tuple[_Seen, object]:
    cfg = make_cfg(["experiment=stage2_fine", *STEP_CKPTS, *extra], output=output)
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 1.0  # the whole (tiny) epoch
        cfg.trainer.limit_val_batches = 0
    module, dm, trainer = build(cfg)
    seen = _Seen()
    trainer.callbacks.append(seen)
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    return seen, trainer


def test_resume_from_a_mid_epoch_checkpoint_sees_exactly_the_rest(make_cfg, tmp_path) -> None:
    full, trainer = _fit(make_cfg, "full", [])
    steps = trainer.global_step
    assert steps >= 6
    saved = sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("*.ckpt"))
    assert "sstep=4.ckpt" in saved and "sstep=2.ckpt" in saved  # written mid-epoch
    ckpt = tmp_path / "full" / "checkpoints" / "sstep=4.ckpt"
    rest, trainer = _fit(make_cfg, "resumed", [f"ckpt_path='{ckpt}'"])
    assert trainer.global_step == steps
    done = len(full.ids) * 4 // steps  # samples of the first 4 steps
    assert rest.ids == full.ids[done:]
