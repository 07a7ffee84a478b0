"""A run stopped mid-epoch and resumed from its checkpoint trains on exactly the samples of one
uninterrupted epoch: none twice, none lost (even with a DataLoader worker prefetching ahead)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from groundinggpt.data.datamodule import GroundingDataModule
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.modalities import SPECIAL_TOKENS
from groundinggpt.training.callbacks import DataMonitor


class Recorder(L.LightningModule):
    """Records which samples each training step received; one parameter to optimise."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        self.seen += [f"{d}/{i}" for d, i in zip(batch["dataset"], batch["id"], strict=True)]
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def text_datamodule(root: Path, sizes: dict[str, int], replay_ratio: float = 0.0, **kwargs):
    """A data module over text-only records (no media: the test is about sampling)."""
    catalog = {}
    for name, n in sizes.items():
        records = [
            {"id": f"{name}{i}", "conversations": [
                {"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(n)
        ]  # fmt: skip
        (root / f"{name}.json").write_text(json.dumps(records))
        catalog[name] = {"file": f"{name}.json", "task": "caption"}
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    names = list(sizes)
    stages = {"s1": {names[-1]: 1.0}, "s2": {n: 1.0 + (i == 1) for i, n in enumerate(names[:-1])}}
    return GroundingDataModule(
        tok, str(root), catalog, stages, train_stage="s2", val=[], processors={},
        media_tokens={"image": 2}, replay_ratio=replay_ratio, max_length=64, seed=3, **kwargs
    )  # fmt: skip


def _fit(dm, ckpt_path=None, **trainer_kwargs) -> tuple[Recorder, L.Trainer]:
    module = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module, trainer


BATCHING = {
    "padded": {},
    "packed": {"pack_length": 64},  # rows of several samples (data/packing.py)
    "length_grouped": {"group_by_length": True, "group_steps": 2},
}


@pytest.mark.parametrize(
    ("num_workers", "batching"),
    [(0, "padded"), (1, "padded"), (1, "packed"), (0, "length_grouped"), (1, "length_grouped")],
)
def test_stop_and_resume_sees_one_epoch_exactly(
    tmp_path: Path, num_workers: int, batching: str
) -> None:
    sizes = {"a": 13, "b": 7, "old": 20}  # b has weight 2; "old" is replayed
    kwargs = {"batch_size": 3, "num_workers": num_workers, **BATCHING[batching]}
    full, _ = _fit(text_datamodule(tmp_path, sizes, 0.2, **kwargs), enable_checkpointing=False)
    assert len(full.seen) == (27 + 7) // 3 * 3  # 13 + 2 * 7 main + 7 replayed, drop_last

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first, _ = _fit(
        text_datamodule(tmp_path, sizes, 0.2, **kwargs),
        max_steps=4,
        callbacks=[ckpt, DataMonitor(min_samples=10**9)],
    )
    assert len(first.seen) == 12
    monitor = DataMonitor(min_samples=10**9)
    second, trainer = _fit(
        text_datamodule(tmp_path, sizes, 0.2, **kwargs),
        ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=4.ckpt"),
        enable_checkpointing=False,
        callbacks=[monitor],
    )
    assert trainer.global_step == len(full.seen) // 3
    assert Counter(first.seen + second.seen) == Counter(full.seen)
    assert first.seen + second.seen == full.seen  # same order too: same seed, same epoch
    # the consumption counts continue across the resume
    counts = monitor.metrics()
    assert counts["data/consumed/total"] == len(full.seen)
    assert counts["data/consumed/dataset/old"] == sum(s.startswith("old/") for s in full.seen)
