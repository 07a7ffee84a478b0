"""``--clip`` reads every CLIP layout transformers writes, and the image encoder computes the same.

The three layouts: ``CLIPModel`` (``vision_model.*`` + text side), ``CLIPVisionModel`` of
transformers < 5 and the hub (``vision_model.*`` only), and ``CLIPVisionModel.save_pretrained``
of the installed transformers (checked below: no prefix, ``embeddings.*``...).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from groundinggpt.convert.__main__ import main
from groundinggpt.convert.io import read_checkpoint
from groundinggpt.convert.released import RELEASED_TOKEN_ORDER, convert_released
from groundinggpt.models.encoders import ClipImageEncoder
from tests.convert.test_released import _write_release, lego_state

VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
IMAGE = "branches.image.encoder."  # where convert_released puts the CLIP tower
LAYOUTS = ("clip_vision_save_pretrained", "clip_vision_prefixed", "clip_model")


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Noise on every parameter, so that norms and biases are not the init's ones and zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _vision_tower(model: CLIPVisionModel | CLIPModel) -> torch.nn.Module:
    """The vision tower (``embeddings``, ``pre_layrnorm``, ``encoder``, ``post_layernorm``).

    ``CLIPModel`` holds it as ``vision_model``; so did ``CLIPVisionModel`` before transformers 5,
    which now *is* the tower.
    """
    return getattr(model, "vision_model", model)


def _save(layout: str, folder: Path) -> tuple[CLIPVisionModel | CLIPModel, set[str]]:
    """A random tiny CLIP written in ``layout``; returns the model and the text-side keys."""
    torch.manual_seed(0)
    if layout == "clip_model":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, vocab_size=64, bos_token_id=0, eos_token_id=1)  # fmt: skip
        model = _perturbed(
            CLIPModel(CLIPConfig(vision_config=VISION, text_config=text, projection_dim=16)), 1
        )
        model.save_pretrained(folder)
        text_keys = {k for k in model.state_dict() if not k.startswith("vision_model.")}
        return model, text_keys
    model = _perturbed(CLIPVisionModel(CLIPVisionConfig(**VISION)), 1)
    if layout == "clip_vision_save_pretrained":
        model.save_pretrained(folder)
    else:  # what transformers < 5 and the hub's CLIPVisionModel files hold
        folder.mkdir(parents=True)
        tower = _vision_tower(model).state_dict()
        save_file({f"vision_model.{k}": v.contiguous() for k, v in tower.items()},
                  str(folder / "model.safetensors"))  # fmt: skip
        model.config.save_pretrained(folder)
    return model, set()


def _saved_keys(folder: Path) -> list[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


def _encoder(state: dict[str, torch.Tensor]) -> ClipImageEncoder:
    """Our image encoder with the converted ``branches.image.encoder.*`` tensors, strictly."""
    enc = ClipImageEncoder(
        image_size=VISION["image_size"],
        patch_size=VISION["patch_size"],
        hidden_size=VISION["hidden_size"],
        num_layers=VISION["num_hidden_layers"],
        num_heads=VISION["num_attention_heads"],
        intermediate_size=VISION["intermediate_size"],
    )
    enc.load_state_dict({k.removeprefix(IMAGE): v for k, v in state.items() if k.startswith(IMAGE)})
    return enc.eval()


def _assert_same_encoder(enc: ClipImageEncoder, source: CLIPVisionModel | CLIPModel) -> None:
    tower = _vision_tower(source)
    ours = enc.model.state_dict()
    for key, value in tower.state_dict().items():
        assert torch.equal(ours[key.removeprefix("vision_model.")], value), key
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = tower(pixel_values=pixels, output_hidden_states=True)
        got = enc.model(pixel_values=pixels, output_hidden_states=True)
        torch.testing.assert_close(enc(pixels), expected.hidden_states[-2][:, 1:])
        torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state)
        torch.testing.assert_close(got.pooler_output, expected.pooler_output)  # post_layernorm


def test_installed_save_pretrained_writes_keys_without_prefix(tmp_path: Path) -> None:
    """Which layout ``clip_vision_save_pretrained`` stands for with this transformers."""
    model, _ = _save("clip_vision_save_pretrained", tmp_path / "clip")
    keys = _saved_keys(tmp_path / "clip")
    assert sorted(keys) == sorted(model.state_dict())
    prefixed = {k.startswith("vision_model.") for k in keys}
    assert len(prefixed) == 1  # one layout or the other, never a mix
    if prefixed == {False}:
        assert {"embeddings.patch_embedding.weight", "post_layernorm.weight"} <= set(keys)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clip_layout_converts_to_the_same_image_encoder(layout: str, tmp_path: Path) -> None:
    source, text_keys = _save(layout, tmp_path / "clip")
    clip = read_checkpoint(tmp_path / "clip")  # what --clip reads
    conversion = convert_released(lego_state(10), clip, vit_depth=2)
    conversion.check_complete("release + clip")
    from_clip = {k for k, v in conversion.sources.items() if v in clip and k.startswith(IMAGE)}
    assert len(from_clip) == len(_vision_tower(source).state_dict())
    dropped = {k for k in clip if k in conversion.dropped}
    assert dropped == text_keys
    assert all(conversion.dropped[k] == "CLIP text side" for k in dropped)
    _assert_same_encoder(_encoder(conversion.state), source)


def test_cli_accepts_a_clip_vision_model_save_pretrained_folder(tmp_path: Path) -> None:
    """The reported failure: ``--clip`` on a folder the installed transformers wrote."""
    source, _ = _save("clip_vision_save_pretrained", tmp_path / "clip")
    released = lego_state(10)
    _write_release(tmp_path / "release", released, RELEASED_TOKEN_ORDER, 10)
    out = tmp_path / "out" / "gg.safetensors"
    main(["--released", str(tmp_path / "release"), "--clip", str(tmp_path / "clip"),
          "--out", str(out), "--vit-depth", "2"])  # fmt: skip
    _assert_same_encoder(_encoder(load_file(str(out))), source)
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(_saved_keys(tmp_path / "clip")) <= set(report["sources"].values())


@pytest.mark.parametrize("layout", ["clip_vision_save_pretrained", "clip_model"])
def test_unknown_clip_keys_still_fail(layout: str, tmp_path: Path) -> None:
    _save(layout, tmp_path / "clip")
    clip = read_checkpoint(tmp_path / "clip")
    prefix = "vision_model." if layout == "clip_model" else ""
    clip[prefix + "encoder.layer_norm.weight"] = torch.ones(32)  # no such module in CLIP
    clip["head.weight"] = torch.ones(2, 32)
    with pytest.raises(ValueError, match="2 keys of unknown layout"):
        convert_released(lego_state(10), clip, vit_depth=2).check_complete("clip")


def test_a_file_mixing_two_layouts_fails(tmp_path: Path) -> None:
    _save("clip_vision_save_pretrained", tmp_path / "clip")
    clip = read_checkpoint(tmp_path / "clip")
    clip["vision_model.post_layernorm.weight"] = clip["post_layernorm.weight"].clone()
    with pytest.raises(ValueError, match="both map to"):
        convert_released(lego_state(10), clip, vit_depth=2)
