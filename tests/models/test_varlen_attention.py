"""``attn_implementation="sdpa_varlen"``: packed rows attend per sample; the rest is ``"sdpa"``.

Tiny random LLMs in fp32: Llama with as many key/value heads as query heads, Llama with
grouped-query attention and Qwen2 (q/k/v biases, grouped-query attention). Packed rows are
built as `groundinggpt.data.packing` builds them: positions restart at 0 for every sample
and for the padding block at the end of a row, and there is no 2-D attention mask.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from groundinggpt.data.packing import packed_positions
from groundinggpt.models import varlen_attention

VOCAB = 64
# Sample lengths per row; the rows pad to WIDTH. Two samples of 4 (one row) and the two
# padding blocks of 2 (one per row) run as batched groups; 6 and 9 run alone.
ROWS = [[6, 4, 4], [9, 5]]
WIDTH = 16

MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM, {"num_key_value_heads": 4}),
    "llama_gqa": (LlamaConfig, LlamaForCausalLM, {"num_key_value_heads": 2}),
    "qwen2_gqa": (Qwen2Config, Qwen2ForCausalLM, {"num_key_value_heads": 2}),
}


def _tiny(family: str, attn: str = varlen_attention.NAME):
    config_cls, model_cls, extra = MODELS[family]
    config = config_cls(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, attn_implementation=attn, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    return model_cls(config).eval()


@pytest.fixture(params=sorted(MODELS))
def family(request) -> str:
    return request.param


def _packed_rows() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``input_ids`` and ``position_ids`` ``(rows, WIDTH)`` and each sample's ids, in row order."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (len(ROWS), WIDTH), generator=generator)
    positions = torch.stack([packed_positions(row, WIDTH) for row in ROWS])
    samples = []
    for r, row in enumerate(ROWS):
        start = 0
        for n in row:
            samples.append(ids[r, start : start + n])
            start += n
    return ids, positions, samples


def _sample_slices() -> list[tuple[int, slice]]:
    slices = []
    for r, row in enumerate(ROWS):
        start = 0
        for n in row:
            slices.append((r, slice(start, start + n)))
            start += n
    return slices


@pytest.fixture
def attention_calls(monkeypatch) -> dict[str, int]:
    """How often the per-segment path ran and how often a ``"sdpa"`` mask was built."""
    calls = {"per_segment": 0, "mask": 0}

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    per_segment = count("per_segment", varlen_attention.attend_per_segment)
    monkeypatch.setattr(varlen_attention, "attend_per_segment", per_segment)
    monkeypatch.setattr(varlen_attention, "sdpa_mask", count("mask", varlen_attention.sdpa_mask))
    return calls


@torch.no_grad()
def test_packed_rows_give_each_sample_its_logits_alone(family, attention_calls) -> None:
    model = _tiny(family)
    ids, positions, samples = _packed_rows()
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
    # The per-segment path ran in every layer, and no (B, 1, T, T) mask was built.
    assert attention_calls == {"per_segment": model.config.num_hidden_layers, "mask": 0}
    for (row, cols), sample in zip(_sample_slices(), samples, strict=True):
        alone = model(input_ids=sample[None], use_cache=False).logits[0]
        torch.testing.assert_close(logits[row, cols], alone, atol=1e-5, rtol=1e-5)


def _summed_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token loss of one sample's ``(n, V)`` logits."""
    return F.cross_entropy(logits[:-1], ids[1:], reduction="sum")


def test_packed_gradients_are_the_sum_of_the_samples_gradients(family) -> None:
    model = _tiny(family)
    ids, positions, samples = _packed_rows()
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
    loss = sum(
        _summed_loss(logits[row, cols], sample)
        for (row, cols), sample in zip(_sample_slices(), samples, strict=True)
    )
    loss.backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for sample in samples:  # accumulated one sample at a time
        _summed_loss(model(input_ids=sample[None], use_cache=False).logits[0], sample).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(packed[name], param.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_activation_checkpointing_recomputes_the_same_packed_gradients() -> None:
    """The segment bounds read once per forward also serve the backward's recomputation."""
    ids, positions, _ = _packed_rows()
    grads = []
    for checkpointing in (False, True):
        model = _tiny("llama_gqa").train()
        if checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        out = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False)
        out.loss.backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, plain, atol=1e-6, rtol=1e-6)


def _both(family: str):
    """The same weights under ``"sdpa"`` and under ``"sdpa_varlen"``."""
    return _tiny(family, "sdpa"), _tiny(family)


@torch.no_grad()
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_gives_exactly_the_sdpa_logits(family, side) -> None:
    sdpa, varlen = _both(family)
    ids = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 3, 7]):
        if pad:
            (mask[row, -pad:] if side == "right" else mask[row, :pad]).zero_()
    out = [m(input_ids=ids, attention_mask=mask, use_cache=False).logits for m in (sdpa, varlen)]
    assert torch.equal(out[0], out[1])


@torch.no_grad()
def test_generation_with_the_kv_cache_gives_exactly_the_sdpa_output(family) -> None:
    sdpa, varlen = _both(family)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as batched generation pads
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0,
              "return_dict_in_generate": True, "output_logits": True}  # fmt: skip
    for attention_mask in (mask, torch.ones_like(ids)):
        out = [m.generate(ids, attention_mask=attention_mask, **kwargs) for m in (sdpa, varlen)]
        assert torch.equal(out[0].sequences, out[1].sequences)
        for a, b in zip(out[0].logits, out[1].logits, strict=True):
            assert torch.equal(a, b)


@torch.no_grad()
def test_with_a_cache_restarting_positions_are_not_packing_as_in_sdpa(family) -> None:
    """``"sdpa"`` reads packing only without a KV cache; so does ``"sdpa_varlen"``."""
    sdpa, varlen = _both(family)
    ids, positions, _ = _packed_rows()
    out = [m(input_ids=ids, position_ids=positions, use_cache=True).logits for m in (sdpa, varlen)]
    assert torch.equal(out[0], out[1])


def test_segment_starts_follow_the_restarts_of_every_row() -> None:
    positions = torch.stack([packed_positions(row, WIDTH) for row in ROWS])
    assert varlen_attention.segment_starts(positions, 2) == [0, 6, 10, 14, 16, 25, 30, 32]
    unpacked = torch.arange(WIDTH)[None]
    assert varlen_attention.segment_starts(unpacked, 2) is None  # a (1, T) batch of two rows
    cu_seq_lens = torch.tensor([0, 5, 9, 16])  # a flattened batch of one row wins
    assert varlen_attention.segment_starts(positions[:1], 1, cu_seq_lens) == [0, 5, 9, 16]
