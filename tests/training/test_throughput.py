"""perf/* in every run's metrics.json: real-token counts, padding, data wait, memory, MFU."""

from __future__ import annotations

import json

import hydra
import pytest
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from groundinggpt.train import build
from groundinggpt.training.throughput import llm_flops_per_token


def test_llm_flops_per_token_is_6n_plus_the_attention_term(make_cfg) -> None:
    cfg = make_cfg(["experiment=stage2_fine"])
    llm = hydra.utils.instantiate(cfg.model.llm)
    c = llm.config
    tables = {id(w): w for w in (llm.get_input_embeddings().weight, llm.lm_head.weight)}
    embeddings = sum(w.numel() for w in tables.values())  # once when tied
    n = sum(p.numel() for p in llm.parameters()) - embeddings
    expected = 6 * n + 12 * c.num_hidden_layers * c.hidden_size * 100
    assert llm_flops_per_token(llm, 100) == pytest.approx(expected)


class _Tokens(Callback):
    def __init__(self) -> None:
        self.real = self.positions = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.real += int(batch["attention_mask"].sum())
        self.positions += batch["attention_mask"].numel()


def test_every_run_reports_its_throughput(make_cfg, tmp_path) -> None:
    cfg = make_cfg(
        ["experiment=stage2_fine", "callbacks.throughput.peak_tflops=1.0",
         "callbacks.throughput.warmup_steps=0"], output="perf",
    )  # fmt: skip
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = 4
        cfg.data.pack_length = None  # padded batches (packed ones have almost no padding)
    module, dm, trainer = build(cfg)
    tokens = _Tokens()
    trainer.callbacks.append(tokens)
    trainer.fit(module, datamodule=dm)
    metrics = json.loads((tmp_path / "perf" / "metrics.json").read_text())
    assert metrics["perf/measured_steps"] == 4
    assert metrics["perf/padding_share"] == pytest.approx(1 - tokens.real / tokens.positions)
    assert 0 < metrics["perf/padding_share"] < 1  # mixed-length batches are padded
    assert 0 <= metrics["perf/data_wait_share"] < 1
    assert metrics["perf/tokens_per_s"] > metrics["perf/samples_per_s"] > 0
    assert metrics["perf/peak_mem_gb"] > 0
    assert 0 < metrics["perf/mfu"] < 1  # against a made-up peak of 1 TFLOP/s
