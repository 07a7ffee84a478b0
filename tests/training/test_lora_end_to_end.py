"""LoRA end to end: train with LoRA, evaluate and ask the checkpoint, start the next stage from
it, and merge it into plain weights whose outputs equal the unmerged model's."""

from __future__ import annotations

import json

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from tests.conftest import compose_config, synthetic_eval_config

from groundinggpt.cli import convert_main
from groundinggpt.train import train
from groundinggpt.training.checkpoint import load_weights, read_state_dict
from groundinggpt.training.lora import apply_lora


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_data_dir):
    """A 2-step stage-2 LoRA run of the tiny model; its checkpoint and its config file."""
    from tests.conftest import shrink

    root = tmp_path_factory.mktemp("lora")
    cfg = compose_config(["experiment=stage2_fine", "stage.trainable.llm=lora"], root, root / "run")
    cfg = shrink(cfg, tiny_data_dir)
    train(cfg)
    ckpt = next((root / "run" / "checkpoints").glob("*.ckpt"))
    config = root / "run" / "config.yaml"
    OmegaConf.save(cfg, config)
    return ckpt, config, cfg


def _model(cfg):
    tok = hydra.utils.instantiate(cfg.tokenizer)
    return hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial"), tok


def test_lora_checkpoint_holds_peft_weights_and_their_settings(lora_run):
    ckpt, _, _ = lora_run
    raw = torch.load(ckpt, weights_only=True)
    assert raw["lora"]["r"] == 8 and raw["lora"]["alpha"] == 16
    state = read_state_dict(ckpt)
    lora_b = [v for k, v in state.items() if ".lora_B." in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # trained: the merge matters


def test_eval_and_infer_load_the_lora_checkpoint(lora_run, tmp_path, tiny_data_dir, capsys):
    from groundinggpt.evaluation.engine import evaluate
    from groundinggpt.evaluation.inference import infer

    ckpt, _, _ = lora_run
    cfg = synthetic_eval_config(ckpt, tiny_data_dir, ("rec", "pope"), tmp_path)
    metrics = evaluate(cfg)
    assert metrics["samples/total"] == 8
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["samples/total"] == 8
    image = next((tiny_data_dir / "images").rglob("*.png"))
    cfg = compose_config(
        [f"ckpt_path={ckpt}", "assistant.device=cpu", "assistant.generation.max_new_tokens=4",
         "prompt='Where is the red circle?'", f"image={image}"],
        tmp_path, tmp_path / "infer", "infer",
    )  # fmt: skip
    answer = infer(cfg)
    assert f"answer: {answer.text}" in capsys.readouterr().out


@pytest.mark.parametrize("llm", ["lora", "full"])
def test_init_from_a_lora_checkpoint_starts_the_next_stage(lora_run, make_cfg, tmp_path, llm):
    ckpt, _, _ = lora_run
    cfg = make_cfg(
        ["experiment=stage3_instruct", f"init_from={ckpt}", f"stage.trainable.llm={llm}"]
    )
    train(cfg)
    after = read_state_dict(next((tmp_path / "run" / "checkpoints").glob("*.ckpt")))
    assert any(".lora_A." in k for k in after) == (llm == "lora")


def test_merged_weights_give_the_unmerged_outputs(lora_run, tmp_path):
    ckpt, config, cfg = lora_run
    out = tmp_path / "merged.safetensors"
    convert_main(["merge-lora", str(ckpt), "--out", str(out), "--config", str(config)])
    merged, tok = _model(cfg)
    load_weights(merged, out)  # plain keys, strict
    assert not hasattr(merged.llm, "peft_config")
    unmerged, _ = _model(cfg)
    apply_lora(unmerged, torch.load(ckpt, weights_only=True)["lora"])
    unmerged.load_state_dict(read_state_dict(ckpt), strict=True)
    torch.manual_seed(0)
    ids = torch.randint(0, len(tok) - 9, (2, 12))
    mask = torch.ones_like(ids)
    media = {}
    with torch.no_grad():
        a = merged.eval()(ids, mask, media).logits
        b = unmerged.eval()(ids, mask, media).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
