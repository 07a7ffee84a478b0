"""Tokens per media item are derived from the encoders and adapters, never typed in a config."""

from __future__ import annotations

from pathlib import Path

from groundinggpt.train import build

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "groundinggpt" / "configs"


def test_no_config_file_types_media_tokens() -> None:
    typed = [p for p in CONFIGS.rglob("*.yaml") if "media_tokens" in p.read_text()]
    assert typed == []


def test_changing_the_image_patch_size_alone_trains(make_cfg) -> None:
    """patch_size 16 on 64 px images: 16 image tokens, in the prompts and in the model."""
    cfg = make_cfg(["experiment=stage2_fine", "model.encoders.image.patch_size=16"])
    module, datamodule, trainer = build(cfg)
    assert module.model.media_tokens == {"image": 16, "video": 8, "audio": 8}
    assert datamodule.formatter.specs["image"].num_tokens == 16
    trainer.fit(module, datamodule=datamodule)  # two steps and a validation batch
    assert trainer.global_step == 2
    assert trainer.callback_metrics["train/loss"].isfinite()
