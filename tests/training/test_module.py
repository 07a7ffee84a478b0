"""The shared generation path: left padding + KV cache give each prompt its own answer."""

from __future__ import annotations

import hydra
import pytest
import torch
from tests.conftest import compose_config

from groundinggpt.data.conversation import ConversationFormatter, pad_sequences
from groundinggpt.modalities import modality_specs
from groundinggpt.models.generation import generate_answers
from groundinggpt.training.module import GroundingLitModule


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("module")
    cfg = compose_config([], root, root / "run")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial").eval()
    fmt = ConversationFormatter(tokenizer, modality_specs(model.media_tokens))
    return model, tokenizer, fmt


def _batch(fmt: ConversationFormatter, questions: list[str], images: torch.Tensor | None):
    prompts = [fmt.prompt_ids([{"from": "human", "value": q}]) for q in questions]
    return {
        "prompt_ids": pad_sequences(prompts, fmt.tokenizer.pad_token_id, left=True),
        "prompt_mask": pad_sequences([[1] * len(p) for p in prompts], 0, left=True),
        "media": {} if images is None else {"image": images},
    }


def test_batched_answers_equal_single_answers(built) -> None:
    model, tok, fmt = built
    torch.manual_seed(1)
    images = torch.randn(3, 3, 64, 64)
    questions = ["<image>\nWhere is it?", "<image>\nIs there a red circle in the image, yes?",
                 "<image>\nA much longer question about the shapes that are in this picture?"]  # fmt: skip
    gen = {"max_new_tokens": 6}
    together = generate_answers(model, tok, _batch(fmt, questions, images), gen)
    alone = [
        generate_answers(model, tok, _batch(fmt, [q], images[i : i + 1]), gen)[0]
        for i, q in enumerate(questions)
    ]
    assert together == alone


def test_answers_are_bounded_and_stripped(built) -> None:
    model, tok, fmt = built
    batch = _batch(fmt, ["Say something.", "Say something else."], None)
    answers = generate_answers(model, tok, batch, {"max_new_tokens": 3})
    tokens = model.generate(batch["prompt_ids"], batch["prompt_mask"], {}, max_new_tokens=3,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    assert tokens.shape[0] == 2 and tokens.shape[1] <= 3
    assert answers == [t.strip() for t in tok.batch_decode(tokens, skip_special_tokens=True)]


def test_lit_module_generates_through_the_shared_path(built) -> None:
    model, tok, fmt = built
    module = GroundingLitModule(model, tok, torch.optim.AdamW, generation={"max_new_tokens": 4})
    batch = _batch(fmt, ["Where?"], None)
    assert module.generate_text(batch) == generate_answers(model, tok, batch, {"max_new_tokens": 4})
