"""``trainer=fsdp``'s wrap plan on the real 7B model (meta device): which modules become FSDP
units, how much stays in the root unit, and the precision it trains in.

Lightning's FSDP needs a GPU, so the plan is computed with the policy FSDP itself applies
(``ModuleWrapPolicy``) rather than by wrapping; the GPU check under experiments/ runs it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import hydra
import pytest
import torch
from tests.conftest import compose_config
from tests.models.test_groundinggpt_7b import _vicuna_sized_tokenizer

from groundinggpt.training.trainability import apply_trainability


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    cfg = compose_config(
        ["model=groundinggpt_7b", "model/llm=vicuna_7b_skeleton", "trainer=fsdp"],
        tmp,
        Path(tmp) / "o",
    )
    with torch.device("meta"):
        model = hydra.utils.instantiate(
            cfg.model, tokenizer=_vicuna_sized_tokenizer(), _convert_="partial"
        )
    apply_trainability(model, encoders="frozen", adapters="full", llm="full")
    policy = hydra.utils.instantiate(cfg.trainer.strategy.auto_wrap_policy)
    units = policy._run_policy(model, set(), {})  # the modules FSDP wraps, root included
    return cfg, model, units


def test_llm_layers_and_every_large_encoder_block_become_units(planned) -> None:
    _, model, units = planned
    kinds = Counter(type(m).__name__ for m in units if m is not model)
    assert kinds == {
        "LlamaDecoderLayer": 32,
        "CLIPEncoderLayer": 24,  # CLIP ViT-L/14-336
        "EvaBlock": 39,  # EVA-g
        "Blip2QFormerLayer": 12 + 2 + 2,  # BLIP-2 Q-Former, video and audio adapters
        "AudioBlock": 12,  # ImageBind-Huge audio trunk (12 blocks, 768 wide)
    }


def test_the_root_unit_keeps_little_of_the_frozen_encoders(planned) -> None:
    _, model, units = planned
    wrapped = {id(p) for m in units if m is not model for p in m.parameters()}
    for name, branch in model.branches.items():
        encoder = list(branch.encoder.parameters())
        in_root = sum(p.numel() for p in encoder if id(p) not in wrapped)
        total = sum(p.numel() for p in encoder)
        assert in_root / total < 0.02, (name, in_root, total)  # patch embeddings, norms only
    # what needs gradients is sharded like the rest: nothing is left out of FSDP
    assert not any(k in planned[0].trainer.strategy for k in ("ignored_modules", "ignored_states"))


def test_fsdp_trains_fp32_sharded_parameters_with_bf16_compute(planned) -> None:
    from lightning.pytorch.plugins.precision import FSDPPrecision

    cfg, _, _ = planned
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.strategy.use_orig_params  # frozen + trainable share the root unit
    mp = FSDPPrecision(cfg.trainer.precision).mixed_precision_config
    assert mp.param_dtype == torch.bfloat16  # the gathered copies used for compute
    # the stored (sharded) parameters keep the module's dtype: fp32 master weights, which
    # the module guarantees for every trainable parameter (keep_trainable_fp32)
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert strategy.mixed_precision is None  # no override of Lightning's bf16-mixed config
