"""Two CPU processes (Lightning ``ddp_fork`` over gloo) see disjoint samples that together
make up the epoch, and the DataMonitor's counts are summed over both ranks."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from groundinggpt.data.datamodule import GroundingDataModule
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.modalities import SPECIAL_TOKENS
from groundinggpt.training.callbacks import DataMonitor


class RankRecorder(L.LightningModule):
    """Writes the samples its rank trained on, and the monitor's totals, to ``out``."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []

    def training_step(self, batch, batch_idx):
        self.seen += list(batch["id"])
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_fit_end(self) -> None:
        monitor = next(c for c in self.trainer.callbacks if isinstance(c, DataMonitor))
        result = {"seen": self.seen, "totals": monitor.metrics()}
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(result))


def _datamodule(root: Path, bad: tuple[int, ...] = (5,)) -> GroundingDataModule:
    records = [
        {"id": f"r{i}", "conversations": [
            {"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
        for i in range(24)
    ]  # fmt: skip
    for i in bad:  # empty answers: skipped on whichever rank draws them
        records[i]["conversations"][1]["value"] = ""
    (root / "a.json").write_text(json.dumps(records))
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return GroundingDataModule(
        tok, str(root), {"a": {"file": "a.json", "task": "caption"}}, {"s": {"a": 1.0}},
        train_stage="s", val=[], processors={}, media_tokens={"image": 2}, batch_size=2,
        max_length=64, seed=0,
    )  # fmt: skip


def _trainer(monitor: DataMonitor) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )


def test_two_ranks_see_disjoint_halves_of_the_epoch(tmp_path: Path) -> None:
    trainer = _trainer(DataMonitor(max_skip_share=0.5, min_samples=1, check_every_n_steps=1))
    trainer.fit(RankRecorder(str(tmp_path)), datamodule=_datamodule(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    seen = [set(r["seen"]) for r in ranks]
    assert len(ranks[0]["seen"]) + len(ranks[1]["seen"]) == 23  # 24 drawn, r5 skipped
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"r{i}" for i in range(24)} - {"r5"}
    totals = ranks[0]["totals"]  # summed over ranks at the end of training
    assert totals["data/consumed/total"] == 23 and totals["data/skipped/reason/empty_answer"] == 1


@pytest.mark.timeout(120)
def test_too_many_skips_stop_every_rank_together(tmp_path: Path) -> None:
    """The share is summed over ranks before the decision, so no rank waits on a dead one."""
    monitor = DataMonitor(max_skip_share=0.2, min_samples=8, check_every_n_steps=2)
    with pytest.raises(Exception, match="max_skip_share"):
        _trainer(monitor).fit(
            RankRecorder(str(tmp_path)),
            datamodule=_datamodule(tmp_path, bad=tuple(range(0, 24, 2))),
        )
