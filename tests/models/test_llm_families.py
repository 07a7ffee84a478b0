"""Any HF causal LM: the tiny model trains and generates with Llama and with Qwen2.

Each family is selected as the CLI would, ``model/llm=<name>`` (``configs/model/llm/``).
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from groundinggpt import train as train_entry
from groundinggpt.models.generation import generate_answers
from groundinggpt.models.grounding_model import GroundingGPT

FAMILIES = {"llama_tiny": "LlamaForCausalLM", "qwen2_tiny": "Qwen2ForCausalLM"}
NEW_TOKENS = 4


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


def _overrides(family: str) -> list[str]:
    return ["experiment=stage2_fine", f"model/llm={family}"]


def test_llm_family_trains_through_train(make_cfg, family, monkeypatch) -> None:
    """``train(cfg)`` fits 2 steps: finite losses, and every trainable LLM tensor moved."""
    built, before = [], {}
    real_build = train_entry.build

    def spy(cfg):  # train() as it is, but keep the module and the LLM's starting weights
        module, datamodule, trainer = real_build(cfg)
        built.append((module, trainer))
        llm = module.model.llm
        before.update({n: p.detach().clone() for n, p in llm.named_parameters() if p.requires_grad})
        return module, datamodule, trainer

    monkeypatch.setattr(train_entry, "build", spy)
    metrics = train_entry.train(make_cfg(_overrides(family)))

    assert len(built) == 1
    module, trainer = built[0]
    assert trainer.global_step == 2
    llm = module.model.llm
    assert type(llm).__name__ == FAMILIES[family]
    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0
    assert math.isfinite(metrics["val/loss"])
    assert before, "stage 2 trains the whole LLM"
    after = dict(llm.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, unchanged


def _validation_batch(cfg) -> tuple[GroundingGPT, object, dict]:
    L.seed_everything(cfg.seed)
    module, datamodule, _ = train_entry.build(cfg)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    return module.model.eval(), module.tokenizer, batch


@torch.no_grad()
def _greedy_without_cache(model: GroundingGPT, tok, batch: dict, steps: int) -> torch.Tensor:
    """Reference decoding: the whole sequence re-run at every step, no ``past_key_values``.

    Positions count only the real (unpadded) tokens, as ``generate`` does for left padding; a
    sequence that emitted EOS continues with padding.
    """
    embeds, mask = model.embed(batch["prompt_ids"], batch["media"]), batch["prompt_mask"]
    table = model.llm.get_input_embeddings()
    done = torch.zeros(mask.shape[0], dtype=torch.bool)
    tokens = []
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        token = out.logits[:, -1].argmax(-1)  # (B,)
        token = torch.where(done, torch.full_like(token, tok.pad_token_id), token)
        done |= token == tok.eos_token_id
        tokens.append(token)
        embeds = torch.cat([embeds, table(token)[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(tokens, dim=1)  # (B, steps)


def test_llm_family_generates_the_same_with_and_without_kv_cache(make_cfg, family) -> None:
    model, tok, batch = _validation_batch(make_cfg(_overrides(family)))
    assert type(model.llm).__name__ == FAMILIES[family]
    assert batch["media"], "the validation batch carries media"
    assert not batch["prompt_mask"].all(), "prompts of several lengths: left padding is tested"
    answers = generate_answers(model, tok, batch, {"max_new_tokens": NEW_TOKENS})
    assert len(answers) == batch["prompt_ids"].shape[0]
    assert all(isinstance(a, str) for a in answers)

    cached = model.generate(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["media"],
        max_new_tokens=NEW_TOKENS,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )  # KV cache, greedy: the path generate_answers takes
    reference = _greedy_without_cache(model, tok, batch, NEW_TOKENS)
    assert cached.shape[1] >= 1
    assert torch.equal(cached, reference[:, : cached.shape[1]])
    assert answers == [
        t.strip()
        for t in tok.batch_decode(reference[:, : cached.shape[1]], skip_special_tokens=True)
    ]


@pytest.mark.parametrize("llm", ["llama_tiny", "qwen2_tiny"])
def test_use_cache_false_passes_through_generation(make_cfg, llm) -> None:
    model, tok, batch = _validation_batch(make_cfg(_overrides(llm)))
    gen = {"max_new_tokens": NEW_TOKENS}
    cached = generate_answers(model, tok, batch, gen)
    assert generate_answers(model, tok, batch, {**gen, "use_cache": False}) == cached
