"""DDP on the real model and the real stage-2 mixture: batches that lack a modality and a fully
skipped batch keep both ranks in step under plain ``strategy=ddp`` (no unused-parameter search),
and both ranks end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy

from groundinggpt.train import build
from groundinggpt.training.module import GroundingLitModule

REPO = Path(__file__).resolve().parents[2]


def test_a_batch_without_video_or_audio_still_gives_every_trainable_parameter_a_gradient(
    make_cfg,
):
    """What plain DDP needs: the same parameters get gradients on every step, on every rank."""
    cfg = make_cfg(["experiment=stage2_fine", "data.replay_ratio=0"])
    cfg.data.stages.stage2_fine = {"rec": 1.0, "pope": 1.0}  # image-only batches
    module, dm, _ = build(cfg)
    module.full_graph = True  # what a data-parallel run does (auto: when world size > 1)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["media"]) == {"image"}
    loss = module.training_step(batch, 0)
    loss.backward()
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, missing[:5]
    # the absent branches' gradients are exactly zero: the term changes nothing but the graph
    assert all(
        p.grad.abs().sum() == 0 for n, p in trainable.items() if ".video." in n or ".audio." in n
    )
    module.zero_grad()
    empty = module.training_step({"size": 0, "skipped": ["missing_file"]}, 1)
    empty.backward()
    assert empty.item() == 0 and all(p.grad is not None for p in trainable.values())


class _RankLog(Callback):
    """Records what each rank trained on and its final weights; skips one batch on rank 1."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append({"size": batch["size"], "media": sorted(batch.get("media", {}))})

    def on_fit_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.model.parameters()])
        torch.save(flat, self.out / f"weights{trainer.global_rank}.pt")
        (self.out / f"batches{trainer.global_rank}.json").write_text(json.dumps(self.batches))


def _skip_one_batch_on_rank_1(collate, index: int = 2):
    calls = {"n": 0}

    def wrapped(samples):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        calls["n"] += 1
        if rank == 1 and calls["n"] == index + 1:  # every sample of this batch is bad
            samples = [{"skipped": "missing_file", "dataset": "rec"} for _ in samples]
        return collate(samples)

    return wrapped


@pytest.mark.timeout(300)
def test_two_gloo_ranks_train_the_real_mixture_in_step(make_cfg, tmp_path):
    cfg = make_cfg(["experiment=stage2_fine"])
    cfg.data.batch_size = 2
    module, dm, _ = build(cfg)
    assert isinstance(module, GroundingLitModule)
    dm.train_collate = _skip_one_batch_on_rank_1(dm.train_collate)
    log = _RankLog(tmp_path)
    # plain DDP (find_unused_parameters=False); a short timeout turns a stall into an error
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)),
        max_epochs=1,
        limit_train_batches=6,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[log],
    )
    assert trainer.strategy._ddp_kwargs.get("find_unused_parameters", False) is False
    trainer.fit(module, datamodule=dm)
    batches = [json.loads((tmp_path / f"batches{r}.json").read_text()) for r in range(2)]
    assert all(len(b) == 6 for b in batches)
    assert batches[1][2]["size"] == 0  # the fully skipped batch
    seen = [set(b["media"]) for r in batches for b in r if b["size"]]
    assert any(s != {"audio", "image", "video"} for s in seen), seen  # a modality was missing
    w0, w1 = (torch.load(tmp_path / f"weights{r}.pt") for r in range(2))
    assert torch.equal(w0, w1)


@pytest.mark.timeout(420)
def test_the_ddp_command_line_finishes(tiny_data_dir, tmp_path):
    """The README's multi-process command, through train.py (Lightning's subprocess launcher)."""
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "experiment=stage2_fine",
        "debug=fast",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.limit_train_batches=12",
        f"data.root={tiny_data_dir}",
        "data.synthetic=null",
        "data.batch_size=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 12
    assert metrics["data/consumed/total"] == 12 * 1 * 2  # both ranks, summed


def test_one_process_leaves_unused_parameters_without_gradient(make_cfg):
    """Alone, AdamW keeps its usual semantics: a branch a batch does not use is not stepped."""
    cfg = make_cfg(["experiment=stage2_fine", "data.replay_ratio=0"])
    cfg.data.stages.stage2_fine = {"rec": 1.0, "pope": 1.0}
    module, dm, _ = build(cfg)
    dm.setup()
    module.training_step(next(iter(dm.train_dataloader())), 0).backward()
    video = [p for n, p in module.named_parameters() if ".video." in n and p.requires_grad]
    assert video and all(p.grad is None for p in video)
    assert module.training_step({"size": 0, "skipped": ["missing_file"]}, 1) is None
