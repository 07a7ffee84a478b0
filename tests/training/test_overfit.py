"""The whole path (splice -> LLM -> labels -> KV-cached generation -> parser -> metrics) can
memorise a handful of samples: if media, labels or prompts were misaligned it could not."""

from __future__ import annotations

import hydra
import torch
from omegaconf import open_dict

from groundinggpt.build import build_datamodule
from groundinggpt.grounding.tasks import GroundingMetrics
from groundinggpt.training.trainability import apply_trainability


def test_tiny_model_memorises_a_batch_and_generates_it_back(make_cfg):
    cfg = make_cfg(["experiment=stage2_fine"])
    with open_dict(cfg):
        cfg.data.stages.stage2_fine = {"rec": 1.0, "pope": 1.0}
        cfg.data.batch_size = 8
        cfg.data.pack_length = None  # padded rows: the calls below pass no packed position ids
    torch.manual_seed(0)
    tok = hydra.utils.instantiate(cfg.tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial")
    apply_trainability(model, encoders="frozen", adapters="full", llm="full")
    dm = build_datamodule(cfg.data, model, tok)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["task"]) == {"rec", "pope"}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(
            batch["input_ids"], batch["attention_mask"], batch["media"], batch["labels"]
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    tokens = model.generate(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["media"],
        max_new_tokens=32,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    outputs = tok.batch_decode(tokens, skip_special_tokens=True)
    metrics = GroundingMetrics()
    metrics.update(batch["task"], outputs, batch["reference"])
    result = metrics.compute()
    assert result["rec/acc@0.5"] == 1.0, outputs
    assert result["pope/accuracy"] == 1.0, outputs
