"""DataMonitor (consumption/skip counts, threshold abort) and RunReport's metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from groundinggpt.data.datamodule import GroundingDataModule
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.modalities import SPECIAL_TOKENS
from groundinggpt.training.callbacks import DataMonitor, RunReport, TooManySkippedError


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _record(i: int, answer: str | None = None, **media: str) -> dict:
    question = "".join(f"<{k}>\n" for k in media) + f"q{i}"
    answer = f"a{i}" if answer is None else answer
    conversations = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": f"r{i}", **media, "conversations": conversations}


def _datamodule(root: Path, records: list[dict]) -> GroundingDataModule:
    (root / "a.json").write_text(json.dumps(records))
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return GroundingDataModule(
        tok, str(root), {"a": {"file": "a.json", "task": "caption"}}, {"s": {"a": 1.0}},
        train_stage="s", val=[], processors={"image": lambda p: torch.zeros(3, 4, 4)},
        media_tokens={"image": 2}, batch_size=4, max_length=64, seed=0,
    )  # fmt: skip


def _fit(root: Path, records: list[dict], monitor: DataMonitor) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, RunReport(str(root / "run"))],
    )
    trainer.fit(TinyModule(), datamodule=_datamodule(root, records))
    return trainer


def test_counts_what_training_consumed_and_skipped(tmp_path: Path) -> None:
    records = [_record(i) for i in range(10)] + [_record(i, image="x.png") for i in range(10, 16)]
    records[3]["conversations"][1]["value"] = "[0.9, 0.1, 0.2, 0.3]"  # reversed box
    records[7] = {"id": "r7"}  # no conversations
    _fit(tmp_path, records, DataMonitor(max_skip_share=0.5, min_samples=4, check_every_n_steps=1))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/consumed/total"] == 14
    assert metrics["data/consumed/modality/image"] == 6
    assert metrics["data/consumed/modality/text"] == 8
    assert metrics["data/consumed/dataset/a"] == 14
    assert metrics["data/skipped/reason/box_reversed"] == 1
    assert metrics["data/skipped/reason/no_conversation"] == 1
    assert metrics["data/skipped/dataset/a"] == 2
    assert metrics["data/skip_share"] == pytest.approx(2 / 16)
    assert metrics["skipped/total"] == 0  # the module (not the monitor) fills skipped/* keys


def test_too_many_skips_abort_with_a_clear_message(tmp_path: Path) -> None:
    records = [_record(i, answer="" if i % 2 else None) for i in range(40)]  # half empty
    monitor = DataMonitor(max_skip_share=0.2, min_samples=8, check_every_n_steps=2)
    with pytest.raises(TooManySkippedError, match=r"50\.0%.*max_skip_share=20\.0%") as err:
        _fit(tmp_path, records, monitor)
    assert "empty_answer" in str(err.value) and "a.json[" in str(err.value)
    # the aborted run still reports what it skipped
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data/skipped/reason/empty_answer"] == 4
    assert metrics["data/consumed/total"] == 4


def test_threshold_waits_for_min_samples_and_state_round_trips() -> None:
    monitor = DataMonitor(max_skip_share=0.1, min_samples=100)
    batch = {
        "dataset": ["a", "b"],
        "media_paths": [{"image": "x"}, {"image": "y", "audio": "z"}],
        "truncated": [True, False],
        "skipped": ["missing_file"],
        "skipped_info": [
            {"skipped": "missing_file", "dataset": "b", "file": "z.png", "detail": "not found"}
        ],
    }
    monitor.count(batch)
    other = DataMonitor()
    other.load_state_dict(monitor.state_dict())
    assert other.metrics() == monitor.metrics()
    m = monitor.metrics()
    assert m["data/consumed/modality/image"] == 2 and m["data/consumed/modality/audio"] == 1
    assert m["data/skipped/dataset/b"] == 1 and m["data/truncated"] == 1
    assert "z.png: not found" in monitor.describe()
    with pytest.raises(ValueError, match="max_skip_share"):
        DataMonitor(max_skip_share=1.5)
