from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from groundinggpt.data.conversation import ConversationFormatter, pad_sequences
from groundinggpt.modalities import modality_specs
from groundinggpt.models.grounding_model import build_grounding_model


class _Identity(nn.Module):
    out_dim = 16

    def __init__(self, num_tokens: int = 1) -> None:
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x):
        return x


class _Adapter(nn.Module):
    out_dim = 16

    def forward(self, x):
        return x

    def num_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens


def _llm(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)


def _model(tokenizer, tokens=(3, 2)):
    llm = _llm(tokenizer)
    enc = {"image": _Identity(tokens[0]), "audio": _Identity(tokens[1])}
    ada = {"image": _Adapter(), "audio": _Adapter()}
    return build_grounding_model(tokenizer, llm, enc, ada)


@pytest.fixture()
def tok():
    from groundinggpt.data.tokenizer import build_tokenizer

    return build_tokenizer()


def test_new_token_rows_start_at_the_mean(tok):
    n_old = len(tok)
    model = _model(tok)
    emb = model.llm.get_input_embeddings().weight
    assert emb.shape[0] == n_old + 9
    torch.testing.assert_close(emb[n_old:], emb[:n_old].mean(0, keepdim=True).expand(9, -1))
    out = model.llm.get_output_embeddings().weight
    torch.testing.assert_close(out[n_old:], out[:n_old].mean(0, keepdim=True).expand(9, -1))


def test_media_lands_exactly_on_its_placeholder_positions(tok):
    model = _model(tok)
    fmt = ConversationFormatter(tok, modality_specs({"image": 3, "audio": 2}))
    texts = ["<image>\nwhere?", "a <sound> and <image> here", "no media"]
    ids = pad_sequences([fmt.encode_text(t) for t in texts], tok.pad_token_id)
    image = torch.arange(2 * 3 * 16, dtype=torch.float).reshape(2, 3, 16) + 1000  # (M, N, D)
    audio = -torch.arange(1 * 2 * 16, dtype=torch.float).reshape(1, 2, 16) - 1000
    embeds = model.embed(ids, {"image": image, "audio": audio})
    plain = model.llm.get_input_embeddings()(ids)
    im_patch = tok.convert_tokens_to_ids("<im_patch>")
    so_patch = tok.convert_tokens_to_ids("<so_patch>")
    # sample 0 holds image item 0; sample 1 holds the sound, then image item 1
    torch.testing.assert_close(embeds[0][ids[0] == im_patch], image[0])
    torch.testing.assert_close(embeds[1][ids[1] == im_patch], image[1])
    torch.testing.assert_close(embeds[1][ids[1] == so_patch], audio[0])
    other = (ids != im_patch) & (ids != so_patch)
    torch.testing.assert_close(embeds[other], plain[other])


def test_token_count_mismatch_is_a_clear_error(tok):
    model = _model(tok)
    fmt = ConversationFormatter(tok, modality_specs({"image": 3, "audio": 2}))
    ids = torch.tensor([fmt.encode_text("<image> hi")])
    with pytest.raises(ValueError, match="placeholder positions"):
        model.embed(ids, {"image": torch.zeros(1, 4, 16)})
    with pytest.raises(ValueError, match="no image media"):
        model.embed(ids, {})


def test_generate_returns_only_new_tokens(tok):
    model = _model(tok).eval()
    fmt = ConversationFormatter(tok, modality_specs({"image": 3, "audio": 2}))
    prompts = [
        fmt.prompt_ids([{"from": "human", "value": t}]) for t in ["<image>\nhi", "x <image>"]
    ]
    ids = pad_sequences(prompts, tok.pad_token_id, left=True)
    mask = pad_sequences([[1] * len(p) for p in prompts], 0, left=True)
    image = torch.randn(2, 3, 16)
    kw = dict(max_new_tokens=5, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    out = model.generate(ids, mask, {"image": image}, **kw)
    assert out.shape[0] == 2 and out.shape[1] <= 5
    # left padding must not change a sample's greedy answer
    i = min(range(2), key=lambda k: len(prompts[k]))  # the left-padded one
    n = len(prompts[i])
    assert n < ids.shape[1]
    alone = model.generate(
        ids[i : i + 1, -n:], mask[i : i + 1, -n:], {"image": image[i : i + 1]}, **kw
    )
    assert out[i, : alone.shape[1]].tolist() == alone[0].tolist()


def test_mismatched_branches_rejected(tok):
    with pytest.raises(ValueError, match="differ"):
        build_grounding_model(tok, _llm(tok), {"image": _Identity()}, {"audio": _Identity()})
