"""Packed training rows: the same logits and per-sample loss as each sample run alone.

The batch mixes image (REC), video (VTG) and audio (sound localisation) samples of the tiny
default model, so media are spliced into the right sample of the right row. The bug class
other packers shipped (positions that do not restart, attention or labels across samples)
fails here.
"""

from __future__ import annotations

import hydra
import pytest
import torch
import torch.nn.functional as F

from groundinggpt.build import build_datamodule
from groundinggpt.data.conversation import IGNORE_INDEX
from groundinggpt.data.dataset import GroundingCollator
from groundinggpt.training.module import media_paths_by_modality


@pytest.fixture(scope="module")
def packed_setup(tmp_path_factory, tiny_data_dir):
    from tests.conftest import compose_config, shrink

    tmp = tmp_path_factory.mktemp("packing")
    cfg = shrink(compose_config(["experiment=stage2_fine"], tmp, tmp / "run"), tiny_data_dir)
    tok = hydra.utils.instantiate(cfg.tokenizer)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial").eval()
    dm = build_datamodule(cfg.data, model, tok)
    dm.setup()
    train = dm.datasets["train"]
    samples = [train[name][i] for name in ("rec", "vtg", "sl") for i in range(2)]
    assert {m for s in samples for m in s["media"]} == {"image", "video", "audio"}
    return model, tok, samples


def _logits(model, batch):
    features = model.encode(batch["media"], media_paths_by_modality(batch))
    out = model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["media"],
        features=features,
        position_ids=batch.get("position_ids"),
    )
    return out.logits


def _token_losses(logits, labels):
    """Per-position next-token losses (0 where there is no label), shifted as HF does."""
    losses = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )
    return losses, labels[:, 1:] != IGNORE_INDEX


@pytest.fixture(params=["sdpa", "sdpa_varlen"])
def attention(request, packed_setup):
    """The LLM's attention implementation for one test, restored afterwards."""
    llm = packed_setup[0].llm
    before = llm.config._attn_implementation
    llm.set_attn_implementation(request.param)
    yield request.param
    llm.set_attn_implementation(before)


@torch.no_grad()
def test_packed_rows_give_each_sample_its_own_logits_and_loss(packed_setup, attention) -> None:
    """Under ``"sdpa"`` (a block-diagonal mask) and ``"sdpa_varlen"`` (attention per sample)."""
    model, tok, samples = packed_setup
    assert model.llm.config._attn_implementation == attention
    lengths = [len(s["input_ids"]) for s in samples]
    pack_length = sum(lengths) // 2 + max(lengths)  # two or three rows, several samples each
    packed = GroundingCollator(tok.pad_token_id, pack_length)(samples)
    assert packed["input_ids"].shape[0] < len(samples)
    logits = _logits(model, packed)
    losses, has_label = _token_losses(logits, packed["labels"])
    alone = GroundingCollator(tok.pad_token_id)
    by_id = {s["id"] + s["task"]: s for s in samples}
    for k, (sample_id, task) in enumerate(zip(packed["id"], packed["task"], strict=True)):
        where = packed["sequence_ids"] == k  # (rows, T): exactly one row holds sample k
        row = int(where.any(1).nonzero())
        cols = where[row].nonzero().squeeze(1)
        single = alone([by_id[sample_id + task]])
        ref = _logits(model, single)[0]
        torch.testing.assert_close(logits[row, cols], ref, atol=1e-5, rtol=1e-5)
        # The sample's loss, from the packed row's own positions only.
        ref_losses, ref_mask = _token_losses(ref[None], single["labels"])
        got = losses[row, cols[:-1]][has_label[row, cols[:-1]]]
        torch.testing.assert_close(got, ref_losses[0][ref_mask[0]], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padded_batches_give_the_same_logits_under_sdpa_and_sdpa_varlen(packed_setup) -> None:
    """Unpacked training and evaluation are untouched by the tiny configs' ``sdpa_varlen``."""
    model, tok, samples = packed_setup
    batch = GroundingCollator(tok.pad_token_id)(samples)
    assert not batch["attention_mask"].all()  # padded: the 2-D mask goes to "sdpa"
    assert model.llm.config._attn_implementation == "sdpa_varlen"  # configs/model/llm/
    varlen = _logits(model, batch)
    model.llm.set_attn_implementation("sdpa")
    try:
        sdpa = _logits(model, batch)
    finally:
        model.llm.set_attn_implementation("sdpa_varlen")
    assert torch.equal(varlen, sdpa)


def test_positions_restart_and_no_label_crosses_a_boundary(packed_setup) -> None:
    _, tok, samples = packed_setup
    batch = GroundingCollator(tok.pad_token_id, 10_000)(samples)
    assert batch["input_ids"].shape[0] == 1  # everything fits one row
    seq, pos, labels = batch["sequence_ids"][0], batch["position_ids"][0], batch["labels"][0]
    starts = [0] + [t for t in range(1, len(seq)) if seq[t] != seq[t - 1]]
    assert len(starts) == len(samples)
    for k, start in enumerate(starts):
        n = int((seq == k).sum())
        assert pos[start : start + n].tolist() == list(range(n))  # restart at every sample
        assert labels[start] == IGNORE_INDEX  # nothing predicts a sample's first token
    # Each sample's labels sit unchanged on its own positions (shift happens inside one sample).
    for k, sample_id in enumerate(batch["id"]):
        sample = next(s for s in samples if s["id"] == sample_id and s["task"] == batch["task"][k])
        assert labels[seq == k].tolist() == [IGNORE_INDEX, *sample["labels"][1:]]


def test_packing_keeps_every_sample_once_and_pads_little(packed_setup) -> None:
    _, tok, samples = packed_setup
    padded = GroundingCollator(tok.pad_token_id)(samples * 4)
    packed = GroundingCollator(tok.pad_token_id, 256)(samples * 4)
    assert sorted(packed["id"]) == sorted(padded["id"])
    assert int(packed["attention_mask"].sum()) == int(padded["attention_mask"].sum())
    share = 1 - packed["attention_mask"].float().mean()
    assert share < 1 - padded["attention_mask"].float().mean()
    assert share <= 0.05
    assert packed["input_ids"].shape[1] <= 256
    # media stacked in packed order: item j of a modality belongs to the j-th sample having it
    for m, stacked in packed["media"].items():
        assert stacked.shape[0] == sum(m in p for p in packed["media_paths"])


def test_a_training_step_on_packed_rows_has_the_padded_loss(packed_setup) -> None:
    model, tok, samples = packed_setup
    batches = [GroundingCollator(tok.pad_token_id, n)(samples) for n in (None, 200)]
    losses = []
    for batch in batches:
        with torch.no_grad():
            out = model(
                batch["input_ids"],
                batch["attention_mask"],
                batch["media"],
                batch["labels"],
                position_ids=batch.get("position_ids"),
            )
        losses.append(out.loss)
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_a_pack_length_shorter_than_max_length_is_refused(packed_setup, tmp_path) -> None:
    from tests.training.test_resume_mid_epoch import text_datamodule

    with pytest.raises(ValueError, match="pack_length 32 < max_length 64"):
        text_datamodule(tmp_path, {"a": 2, "old": 2}, pack_length=32)


def test_the_training_loader_packs_and_evaluation_does_not(tmp_path) -> None:
    from tests.training.test_resume_mid_epoch import text_datamodule

    dm = text_datamodule(tmp_path, {"a": 9, "old": 2}, pack_length=64, batch_size=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["size"] == 3 and batch["input_ids"].shape[0] == 1  # three short samples, one row
    assert batch["position_ids"][0].tolist().count(0) >= 3
    assert "position_ids" not in dm.collate([dm.datasets["train"]["a"][0]])
