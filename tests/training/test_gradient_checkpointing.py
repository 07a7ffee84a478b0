"""``module.gradient_checkpointing``: the same loss and gradients, activations recomputed."""

from __future__ import annotations

import hydra
import pytest
import torch

from groundinggpt.build import build_datamodule


def _loss_and_grads(cfg, batch, switch):
    torch.manual_seed(0)
    tok = hydra.utils.instantiate(cfg.tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial")
    module = hydra.utils.instantiate(
        cfg.module, model=model, tokenizer=tok, gradient_checkpointing=switch
    )
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return module, loss.detach(), grads


@pytest.mark.parametrize("switch", [True, {"llm": True, "adapters": False}])
def test_checkpointed_training_gives_the_same_gradients(make_cfg, switch) -> None:
    cfg = make_cfg(["experiment=stage2_fine"])
    tok = hydra.utils.instantiate(cfg.tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial")
    dm = build_datamodule(cfg.data, model, tok)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    _, plain_loss, plain = _loss_and_grads(cfg, batch, False)
    module, loss, grads = _loss_and_grads(cfg, batch, switch)
    assert any(getattr(m, "gradient_checkpointing", False) for m in module.model.llm.modules())
    adapters = switch is True
    assert all(b.checkpoint_adapter == adapters for b in module.model.branches.values())
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain[name], atol=1e-6, rtol=1e-4, msg=name)


def test_auto_turns_checkpointing_on_under_deepspeed_only(make_cfg) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    cfg = make_cfg(["experiment=stage2_fine", "module.feature_cache=null"])  # no datamodule
    assert cfg.module.gradient_checkpointing == "auto"

    def checkpointed(strategy) -> bool:
        tok = hydra.utils.instantiate(cfg.tokenizer)
        model = hydra.utils.instantiate(cfg.model, tokenizer=tok, _convert_="partial")
        module = hydra.utils.instantiate(cfg.module, model=model, tokenizer=tok)
        module.trainer = SimpleNamespace(strategy=strategy, precision="32-true")
        module.setup("fit")
        return any(getattr(m, "gradient_checkpointing", False) for m in model.llm.modules())

    assert checkpointed(DeepSpeedStrategy(stage=2))
    assert not checkpointed(DDPStrategy())
