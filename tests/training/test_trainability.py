from __future__ import annotations

import hydra
import pytest
import torch

from groundinggpt.build import build_datamodule
from groundinggpt.training.trainability import apply_trainability


@pytest.fixture()
def built(make_cfg):
    cfg = make_cfg(["experiment=stage2_fine"])
    tok = hydra.utils.instantiate(cfg.tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial")
    dm = build_datamodule(cfg.data, model, tok)
    dm.setup()
    # a batch holding every modality, so that every adapter gets a gradient
    batch = next(
        b
        for b in dm.train_dataloader()
        if all(b["media"].get(m) is not None and len(b["media"][m]) for m in model.branches)
    )
    return model, batch


def _step(model, batch):
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0
    )
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = model(batch["input_ids"], batch["attention_mask"], batch["media"], batch["labels"])
    out.loss.backward()
    opt.step()
    return before, model.state_dict()


def _changed(before, after, prefix):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_stage2_frozen_encoders_unchanged_rest_changes(built):
    model, batch = built
    apply_trainability(model, encoders="frozen", adapters="full", llm="full")
    before, after = _step(model, batch)
    for name in model.branches:
        enc = {k for k in before if k.startswith(f"branches.{name}.encoder.")}
        assert enc and not _changed(before, after, f"branches.{name}.encoder.")
        assert _changed(before, after, f"branches.{name}.adapter.")
    assert _changed(before, after, "llm.model.layers.0.")


def test_stage1_only_new_token_rows_of_the_llm_learn(built):
    model, batch = built
    apply_trainability(model, encoders="frozen", adapters="full", llm="frozen")
    before, after = _step(model, batch)
    changed_llm = _changed(before, after, "llm.")
    assert changed_llm <= {"llm.model.embed_tokens.weight", "llm.lm_head.weight"}
    emb_b, emb_a = before["llm.model.embed_tokens.weight"], after["llm.model.embed_tokens.weight"]
    assert torch.equal(emb_b[:-9], emb_a[:-9])  # the original vocabulary is untouched
    assert not torch.equal(emb_b[-9:], emb_a[-9:])  # modality tokens learn
    assert _changed(before, after, "branches.image.adapter.")


def test_lora_trains_only_lora_weights_in_the_llm(built):
    model, batch = built
    apply_trainability(model, llm="lora", new_token_embeddings=False, lora={"r": 4})
    trainable = {n for n, p in model.llm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_bad_mode_rejected(built):
    model, _ = built
    with pytest.raises(ValueError, match="not one of"):
        apply_trainability(model, encoders="lora")


def test_stage1_trains_the_rows_of_the_modality_tokens_wherever_they_are(make_cfg):
    """Two branches (image and audio; all nine tokens are in the tokenizer, video's between
    them): exactly the image and audio tokens' rows learn (the old rule "the last 3 x branches
    rows" picked the video and sound tokens' rows)."""
    from groundinggpt.modalities import SPECIAL_TOKENS
    from groundinggpt.training.trainability import modality_token_rows

    cfg = make_cfg(["experiment=stage1_pretrain"])
    tok = hydra.utils.instantiate(cfg.tokenizer)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})  # before the model
    branches = ("image", "audio")
    encoders = {m: hydra.utils.instantiate(cfg.model.encoders[m]) for m in branches}
    adapters = {m: hydra.utils.instantiate(cfg.model.adapters[m]) for m in branches}
    from groundinggpt.models.grounding_model import build_grounding_model

    llm = hydra.utils.instantiate(cfg.model.llm)
    model = build_grounding_model(tok, llm, encoders, adapters)
    image_rows = tok.convert_tokens_to_ids(["<im_start>", "<im_patch>", "<im_end>"])
    sound_rows = tok.convert_tokens_to_ids(["<so_start>", "<so_patch>", "<so_end>"])
    added = sorted(image_rows + sound_rows)
    assert modality_token_rows(model) == added
    assert sorted(added) != list(range(len(tok) - 6, len(tok)))  # not the last rows
    apply_trainability(model, encoders="frozen", adapters="full", llm="frozen")
    emb = model.llm.get_input_embeddings().weight
    emb.sum().backward()
    touched = emb.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == added


def test_all_embedding_rows_train_with_a_lora_llm_as_glamm(make_cfg):
    """``new_token_embeddings: all``: LoRA on the LLM plus every row of both embeddings."""
    from groundinggpt.train import build

    cfg = make_cfg(["experiment=stage2_fine", "stage.trainable.llm=lora",
                    "+stage.trainable.new_token_embeddings=all"])  # fmt: skip
    module, _, _ = build(cfg)
    llm = module.model.llm
    emb_in, emb_out = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
    assert emb_in.requires_grad and emb_out.requires_grad
    layer = llm.get_base_model().model.layers[0]
    assert not layer.self_attn.q_proj.base_layer.weight.requires_grad
    assert layer.self_attn.q_proj.lora_A["default"].weight.requires_grad
    # every row learns (no row mask): a loss on an old row's logit moves that row
    emb_in.grad = None
    (emb_in[5].sum() + emb_out[7].sum()).backward()
    assert emb_in.grad[5].abs().sum() > 0 and emb_in.grad[7].abs().sum() > 0
