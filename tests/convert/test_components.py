"""Component checkpoints in their original layouts load into our encoders and compute the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Blip2VisionConfig,
    Blip2VisionModel,
    CLIPConfig,
    CLIPModel,
)

from groundinggpt.convert.components import (
    blip2_video_encoder_conversion,
    clip_vision_rules,
    load_conversion,
    pretrained_audio_encoder,
    pretrained_video_encoder,
    qformer_rules,
)
from groundinggpt.models.adapters import QFormer
from groundinggpt.models.encoders import ClipImageEncoder
from tests.convert import originals as orig

H, LAYERS, INTER, ENC, Q = 16, 3, 32, 12, 4
VIDEO = dict(
    image_size=28,
    patch_size=14,
    vit_width=16,
    vit_depth=2,
    vit_heads=2,
    vit_mlp_ratio=2.0,
    num_query_tokens=4,
    qformer_hidden_size=16,
    qformer_layers=2,
    qformer_heads=2,
    qformer_intermediate_size=32,
    cross_attention_frequency=2,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blip2_lavis(gen: torch.Generator, vit_depth: int = 3) -> dict[str, torch.Tensor]:
    """A BLIP-2 stage-1 checkpoint: EVA (one block more than BLIP-2 keeps), Q-Former, heads."""
    sd = orig.lavis_eva("visual_encoder.", 16, vit_depth, 32, 14, 4, gen)
    sd["ln_vision.weight"], sd["ln_vision.bias"] = 1 + 0.1 * torch.randn(16), torch.randn(16)
    sd.update(orig.lavis_qformer("Qformer.bert.", 16, 2, 32, 16, 2, gen, text_parts=True))
    sd["Qformer.cls.predictions.bias"] = torch.zeros(30)
    sd["query_tokens"] = torch.randn(1, 4, 16, generator=gen)
    sd["itm_head.weight"], sd["temp"] = torch.randn(2, 16), torch.tensor(0.07)
    return sd


# -------------------------------------------------------------------------------- Q-Former


def test_lavis_qformer_keys_map_onto_hf_names() -> None:
    rules = qformer_rules("Qformer.bert.", "q.")
    assert rules.target("Qformer.bert.embeddings.LayerNorm.bias") == ("q.layernorm.bias", "")
    assert rules.target("Qformer.bert.encoder.layer.3.attention.self.value.weight") == (
        "q.encoder.layer.3.attention.attention.value.weight",
        "",
    )
    assert rules.target("Qformer.bert.encoder.layer.0.crossattention.output.LayerNorm.weight") == (
        "q.encoder.layer.0.crossattention.output.LayerNorm.weight",
        "",
    )
    assert rules.target("Qformer.bert.encoder.layer.1.output_query.dense.bias") == (
        "q.encoder.layer.1.output_query.dense.bias",
        "",
    )
    assert rules.target("Qformer.bert.encoder.layer.1.output.dense.bias")[0] is None
    assert rules.target("Qformer.bert.embeddings.word_embeddings.weight")[0] is None
    assert rules.target("Qformer.bert.encoder.layer.1.mystery.weight") is None


@pytest.mark.parametrize("freq", [1, 2])
def test_converted_qformer_equals_lavis_reference(freq: int) -> None:
    """The Q-Former step (self-attn, cross-attn every ``freq`` layers, query FFN) matches."""
    sd = orig.lavis_qformer("bert.", H, LAYERS, INTER, ENC, freq, _gen(), text_parts=True)
    sd["query_tokens"] = torch.randn(1, Q, H, generator=_gen(1))
    qformer = QFormer(Q, H, LAYERS, 2, INTER, ENC, freq).eval()
    rules = qformer_rules("bert.", "model.").rename(r"query_tokens$", "query_tokens")
    conversion = rules.apply(sd)
    load_conversion(qformer, conversion, "lavis")
    assert set(conversion.dropped) == {
        k
        for k in sd
        if "embeddings.position" in k
        or "word_embeddings" in k
        or ".intermediate." in k
        or ".output.dense" in k
        and "attention" not in k
        or ".output.LayerNorm" in k
        and "attention" not in k
    }
    enc = torch.randn(2, 7, ENC, generator=_gen(2))
    expected = orig.lavis_qformer_forward(
        sd, "bert.", sd["query_tokens"].expand(2, -1, -1), enc, LAYERS, 2, freq
    )
    with torch.no_grad():
        torch.testing.assert_close(qformer(enc), expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------- BLIP-2 video encoder


def test_blip2_lavis_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    sd = _blip2_lavis(_gen())
    path = tmp_path / "blip2_pretrained.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    enc = pretrained_video_encoder(**VIDEO, pretrained=str(path)).eval()
    frames = torch.randn(1, 2, 3, 28, 28, generator=_gen(3))
    x = orig.lavis_eva_forward(sd, "visual_encoder.", frames.flatten(0, 1), 2, 2)
    x = torch.nn.functional.layer_norm(x, (16,), sd["ln_vision.weight"], sd["ln_vision.bias"])
    queries = sd["query_tokens"].expand(2, -1, -1)
    expected = orig.lavis_qformer_forward(sd, "Qformer.bert.", queries, x, 2, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(enc(frames), expected.view(1, 2, 4, 16), atol=1e-5, rtol=1e-5)


def test_blip2_without_vit_needs_eva_file(tmp_path: Path) -> None:
    sd = _blip2_lavis(_gen())
    eva = {k.removeprefix("visual_encoder."): v for k, v in sd.items() if "visual_encoder" in k}
    blip2 = {k: v for k, v in sd.items() if "visual_encoder" not in k}
    torch.save(blip2, tmp_path / "blip2.pth")
    with pytest.raises(KeyError, match="not in the checkpoint.*visual_encoder"):
        pretrained_video_encoder(**VIDEO, pretrained=str(tmp_path / "blip2.pth"))
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    enc = pretrained_video_encoder(
        **VIDEO,
        pretrained=str(tmp_path / "blip2.pth"),
        vit_pretrained=str(tmp_path / "eva_vit_g.pth"),
    )
    torch.testing.assert_close(
        enc.visual_encoder.blocks[1].attn.q_bias, sd["visual_encoder.blocks.1.attn.q_bias"]
    )


def test_blip2_missing_or_unknown_key_fails(tmp_path: Path) -> None:
    sd = _blip2_lavis(_gen())
    del sd["Qformer.bert.encoder.layer.1.output_query.dense.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match="output_query.dense.weight"):
        pretrained_video_encoder(**VIDEO, pretrained=str(tmp_path / "missing.pth"))
    sd = _blip2_lavis(_gen())
    sd["Qformer.bert.encoder.layer.0.adapter.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown layout.*adapter.weight"):
        blip2_video_encoder_conversion(sd, 2).check_complete("blip2")


def test_hf_blip2_folder_matches_hf_modules(tmp_path: Path) -> None:
    """HF BLIP-2 layout: vision_model (post_layernorm = ln_vision) + qformer + query_tokens."""
    torch.manual_seed(0)
    vision = Blip2VisionModel(
        Blip2VisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            qkv_bias=True,
        )
    ).eval()
    with torch.no_grad():  # HF zero-inits biases: make every one count
        for p in vision.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    qformer = Blip2QFormerModel(
        Blip2QFormerConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            encoder_hidden_size=16,
            cross_attention_frequency=2,
        )
    ).eval()
    state = {f"vision_model.{k}": v for k, v in vision.state_dict().items()}
    state |= {f"qformer.{k}": v for k, v in qformer.state_dict().items()}
    state["query_tokens"] = torch.randn(1, 4, 16)
    state["language_projection.weight"] = torch.randn(8, 16)
    half = len(state) // 2
    keys = sorted(state)
    save_file(
        {k: state[k].contiguous() for k in keys[:half]},
        str(tmp_path / "model-00001-of-00002.safetensors"),
    )
    save_file(
        {k: state[k].contiguous() for k in keys[half:]},
        str(tmp_path / "model-00002-of-00002.safetensors"),
    )
    enc = pretrained_video_encoder(**VIDEO, pretrained=str(tmp_path)).eval()
    frames = torch.randn(1, 2, 3, 28, 28, generator=_gen(4))
    with torch.no_grad():
        feats = vision(pixel_values=frames.flatten(0, 1)).last_hidden_state
        queries = state["query_tokens"].expand(2, -1, -1)
        expected = qformer(query_embeds=queries, encoder_hidden_states=feats).last_hidden_state
        torch.testing.assert_close(enc(frames), expected.view(1, 2, 4, 16), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ ImageBind


def test_imagebind_checkpoint_loads_audio_branch(tmp_path: Path) -> None:
    sd = orig.imagebind(16, 1, 24, 228, _gen())
    torch.save(sd, tmp_path / "imagebind_huge.pth")
    enc = pretrained_audio_encoder(
        embed_dim=16,
        depth=1,
        num_heads=2,
        out_dim=24,
        pretrained=str(tmp_path / "imagebind_huge.pth"),
    ).eval()
    fbank = torch.randn(2, 1, 128, 204, generator=_gen(5))
    with torch.no_grad():
        expected = orig.imagebind_patch_embed(sd, "", fbank)
        torch.testing.assert_close(enc.patch_embed(fbank), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.head_proj.weight, sd["modality_heads.audio.2.weight"])
    torch.testing.assert_close(
        enc.blocks[0].attn.bias_k, sd["modality_trunks.audio.blocks.0.attn.bias_k"]
    )


def test_imagebind_bad_checkpoints_fail(tmp_path: Path) -> None:
    sd = orig.imagebind(16, 1, 24, 228, _gen())
    sd["modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(10.0).log()
    torch.save(sd, tmp_path / "scale.pth")
    kwargs = dict(embed_dim=16, depth=1, num_heads=2, out_dim=24)
    with pytest.raises(ValueError, match="logit scale 10"):
        pretrained_audio_encoder(**kwargs, pretrained=str(tmp_path / "scale.pth"))
    sd = orig.imagebind(16, 1, 24, 228, _gen())
    del sd["modality_trunks.audio.blocks.0.attn.bias_v"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match="bias_v"):
        pretrained_audio_encoder(**kwargs, pretrained=str(tmp_path / "missing.pth"))


# ---------------------------------------------------------------------------------- CLIP


def test_clip_model_weights_convert_to_vision_encoder() -> None:
    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config=dict(
            image_size=28,
            patch_size=14,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=32,
        ),
        text_config=dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=50,
        ),
        projection_dim=8,
    )
    clip = CLIPModel(config).eval()
    enc = ClipImageEncoder(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_layers=3,
        num_heads=2,
        intermediate_size=32,
    ).eval()
    conversion = clip_vision_rules("", "model.").apply(clip.state_dict())
    load_conversion(enc, conversion, "clip")
    assert conversion.dropped and all(
        not k.startswith("vision_model.encoder") for k in conversion.dropped
    )
    pixels = torch.randn(1, 3, 28, 28, generator=_gen(6))
    with torch.no_grad():
        hidden = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        torch.testing.assert_close(enc(pixels), hidden[-2][:, 1:])
