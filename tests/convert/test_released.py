"""The released GroundingGPT ("LEGO") layout converts into our model, tensor for tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from groundinggpt.convert.__main__ import main
from groundinggpt.convert.released import RELEASED_TOKEN_ORDER, convert_released
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.modalities import SPECIAL_TOKENS
from groundinggpt.models.adapters import AudioQFormerAdapter, MLPAdapter, VideoQFormerAdapter
from groundinggpt.models.encoders import BlipVideoEncoder, ClipImageEncoder
from groundinggpt.models.grounding_model import build_grounding_model
from groundinggpt.models.imagebind_audio import ImageBindAudioEncoder
from groundinggpt.training.checkpoint import load_weights
from tests.convert import originals as orig

D = 32  # LLM width
VIT_W, QF_H, AUD_D, AUD_OUT = 16, 16, 16, 24
RELEASED_EVA_DEPTH, EVA_DEPTH = 3, 2


def _llama(vocab: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _our_model(tokenizer):
    torch.manual_seed(0)
    encoders = {
        "image": ClipImageEncoder(
            image_size=28,
            patch_size=14,
            hidden_size=16,
            num_layers=2,
            num_heads=2,
            intermediate_size=32,
        ),
        "video": BlipVideoEncoder(
            image_size=28,
            patch_size=14,
            vit_width=VIT_W,
            vit_depth=EVA_DEPTH,
            vit_heads=2,
            vit_mlp_ratio=2.0,
            num_query_tokens=4,
            qformer_hidden_size=QF_H,
            qformer_layers=2,
            qformer_heads=2,
            qformer_intermediate_size=32,
        ),
        "audio": ImageBindAudioEncoder(
            embed_dim=AUD_D, depth=1, num_heads=2, out_dim=AUD_OUT, drop_path=0.0
        ),
    }
    adapters = {
        "image": MLPAdapter(16, D),
        "video": VideoQFormerAdapter(
            QF_H,
            max_frames=8,
            num_query_tokens=4,
            num_layers=2,
            num_heads=2,
            intermediate_size=32,
            out_dim=D,
        ),
        "audio": AudioQFormerAdapter(
            AUD_OUT,
            max_clips=8,
            num_query_tokens=2,
            hidden_size=16,
            num_layers=2,
            num_heads=2,
            intermediate_size=32,
            out_dim=D,
        ),
    }
    llm = _llama(len(tokenizer))
    model = build_grounding_model(tokenizer, llm, encoders, adapters).eval()
    assert model.media_tokens == {"image": 4, "video": 4, "audio": 2}
    return model


def lego_state(base_vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``LEGOLlamaForCausalLM`` state dict at toy width, keys as the release stores them."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sd = {k: v.clone() for k, v in _llama(base_vocab + 9).state_dict().items()}
    with torch.no_grad():
        for v in sd.values():  # norms start at 1: make them count
            v.add_(torch.randn(v.shape, generator=gen) * 0.02)
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    m = "model."
    sd |= {
        m + "mm_vision_projector.0.weight": torch.randn(D, 16, generator=gen) * 0.2,
        m + "mm_vision_projector.0.bias": torch.randn(D, generator=gen) * 0.1,
        m + "mm_vision_projector.2.weight": torch.randn(D, D, generator=gen) * 0.2,
        m + "mm_vision_projector.2.bias": torch.randn(D, generator=gen) * 0.1,
        m + "ln_vision.weight": 1 + torch.randn(VIT_W, generator=gen) * 0.1,
        m + "ln_vision.bias": torch.randn(VIT_W, generator=gen) * 0.1,
        m + "query_tokens": torch.randn(1, 4, QF_H, generator=gen),
        m + "video_frame_position_embedding.weight": torch.randn(8, QF_H, generator=gen),
        m + "video_query_tokens": torch.randn(1, 4, QF_H, generator=gen),
        m + "llama_proj.weight": torch.randn(D, QF_H, generator=gen) * 0.2,
        m + "llama_proj.bias": torch.randn(D, generator=gen) * 0.1,
        m + "audio_position_embedding.weight": torch.randn(8, AUD_OUT, generator=gen),
        m + "audio_query_tokens": torch.randn(1, 2, 16, generator=gen),
        m + "audio_llama_proj.weight": torch.randn(D, 16, generator=gen) * 0.2,
        m + "audio_llama_proj.bias": torch.randn(D, generator=gen) * 0.1,
    }
    sd |= orig.lavis_eva(m + "visual_encoder.", VIT_W, RELEASED_EVA_DEPTH, 32, 14, 4, gen)
    sd |= orig.lavis_qformer(m + "Qformer.bert.", QF_H, 2, 32, VIT_W, 2, gen)
    sd |= orig.lavis_qformer(m + "video_Qformer.bert.", QF_H, 2, 32, QF_H, 1, gen)
    sd |= orig.lavis_qformer(m + "audio_Qformer.bert.", 16, 2, 32, AUD_OUT, 1, gen)
    audio = orig.imagebind(AUD_D, 1, AUD_OUT, 228, gen)
    sd |= {m + "audio_encoder." + k: v for k, v in audio.items()}
    return sd


def _clip_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    config = CLIPVisionConfig(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    inner = CLIPVisionModel(config).state_dict()
    # as on the hub: a CLIPModel checkpoint, vision keys under vision_model.
    state = {"vision_model." + k.removeprefix("vision_model."): v for k, v in inner.items()}
    state |= {"text_projection.weight": torch.zeros(4, 4), "logit_scale": torch.tensor(2.0)}
    return state


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    base = len(tok)
    model = _our_model(tok)
    released = lego_state(base)
    conversion = convert_released(released, _clip_state(), vit_depth=EVA_DEPTH)
    conversion.check_complete("release")
    model.load_state_dict(conversion.state, strict=True)
    return tok, base, model, released, conversion


def test_every_released_tensor_is_accounted_for(setup) -> None:
    _, _, model, released, conversion = setup
    used = {v for v in conversion.sources.values()}
    released_used = {k for k in used if k in released}
    assert released_used | set(conversion.dropped) >= set(released)
    dropped = {k for k in conversion.dropped if k in released}
    expected = {k for k in released if k.endswith(("position_ids", "inv_freq", "log_logit_scale"))}
    expected |= {k for k in released if "modality_preprocessors.vision" in k}
    expected |= {k for k in released if f"visual_encoder.blocks.{RELEASED_EVA_DEPTH - 1}." in k}
    assert dropped == expected
    assert set(conversion.state) == set(model.state_dict())  # nothing missing, nothing invented


def test_tensors_land_unchanged_where_the_names_say(setup) -> None:
    _, base, _, released, conversion = setup
    for new, old in conversion.sources.items():
        if old in released and new not in ("llm.model.embed_tokens.weight", "llm.lm_head.weight"):
            assert torch.equal(conversion.state[new], released[old]), (old, new)


def test_special_token_rows_follow_the_token_strings(setup) -> None:
    tok, base, model, released, _ = setup
    emb = model.llm.get_input_embeddings().weight
    head = model.llm.get_output_embeddings().weight
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(base, base + 9))
    for token in SPECIAL_TOKENS:
        ours, theirs = tok.convert_tokens_to_ids(token), base + RELEASED_TOKEN_ORDER.index(token)
        assert torch.equal(emb[ours], released["model.embed_tokens.weight"][theirs])
        assert torch.equal(head[ours], released["lm_head.weight"][theirs])
    assert torch.equal(emb[:base], released["model.embed_tokens.weight"][:base])


def test_llm_logits_equal_the_released_llm_up_to_the_token_permutation(setup) -> None:
    tok, base, model, released, _ = setup
    reference = _llama(base + 9).eval()
    reference.load_state_dict(
        {
            k: v
            for k, v in released.items()
            if "inv_freq" not in k
            and (k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head")))
        }
    )
    ours_ids = torch.tensor([[1, 5, base, base + 1, base + 2, 7, base + 4, base + 8]])
    to_released = {
        base + i: base + RELEASED_TOKEN_ORDER.index(t) for i, t in enumerate(SPECIAL_TOKENS)
    }
    theirs_ids = ours_ids.clone().apply_(lambda i: to_released.get(i, i))
    with torch.no_grad():
        ours = model.llm(input_ids=ours_ids).logits
        theirs = reference(input_ids=theirs_ids).logits
    order = torch.arange(base + 9)
    for ours_id, theirs_id in to_released.items():
        order[ours_id] = theirs_id
    torch.testing.assert_close(ours, theirs[..., order])


def test_image_adapter_equals_lego_projector(setup) -> None:
    _, _, model, sd, _ = setup
    x = torch.randn(2, 4, 16)
    p = "model.mm_vision_projector."
    expected = F.linear(
        F.gelu(F.linear(x, sd[p + "0.weight"], sd[p + "0.bias"])),
        sd[p + "2.weight"],
        sd[p + "2.bias"],
    )
    with torch.no_grad():
        torch.testing.assert_close(model.branches["image"].adapter(x), expected)


def test_video_branch_equals_lego_encode_video(setup) -> None:
    """LEGO.encode_videoQformer_visual from the released tensors, with functional ops."""
    _, _, model, sd, _ = setup
    frames = torch.randn(2, 3, 3, 28, 28, generator=torch.Generator().manual_seed(7))
    b, t = frames.shape[:2]
    x = orig.lavis_eva_forward(sd, "model.visual_encoder.", frames.flatten(0, 1), EVA_DEPTH, 2)
    x = F.layer_norm(x, (VIT_W,), sd["model.ln_vision.weight"], sd["model.ln_vision.bias"])
    q = sd["model.query_tokens"].expand(b * t, -1, -1)
    frame_q = orig.lavis_qformer_forward(sd, "model.Qformer.bert.", q, x, 2, 2, 2)  # (B*T, 4, H)
    pos = sd["model.video_frame_position_embedding.weight"][:t]  # (T, H)
    frame_q = frame_q.view(b, t, 4, QF_H) + pos[None, :, None]
    vq = sd["model.video_query_tokens"].expand(b, -1, -1)
    video = orig.lavis_qformer_forward(
        sd, "model.video_Qformer.bert.", vq, frame_q.flatten(1, 2), 2, 2, 1
    )
    expected = F.linear(video, sd["model.llama_proj.weight"], sd["model.llama_proj.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model.branches["video"](frames), expected, atol=1e-5, rtol=1e-5)


def test_audio_branch_equals_lego_encode_audio(setup) -> None:
    """Patch embedding and the audio Q-Former path of LEGO.encode_audioQformer."""
    _, _, model, sd, _ = setup
    branch = model.branches["audio"]
    fbank = torch.randn(4, 1, 128, 204, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(
            branch.encoder.patch_embed(fbank),
            orig.imagebind_patch_embed(sd, "model.audio_encoder.", fbank),
            atol=1e-5,
            rtol=1e-5,
        )
    clips = torch.randn(2, 3, AUD_OUT, generator=torch.Generator().manual_seed(9))
    x = clips + sd["model.audio_position_embedding.weight"][:3]
    q = sd["model.audio_query_tokens"].expand(2, -1, -1)
    hidden = orig.lavis_qformer_forward(sd, "model.audio_Qformer.bert.", q, x, 2, 2, 1)
    expected = F.linear(
        hidden, sd["model.audio_llama_proj.weight"], sd["model.audio_llama_proj.bias"]
    )
    with torch.no_grad():
        torch.testing.assert_close(branch.adapter(clips), expected, atol=1e-5, rtol=1e-5)


def test_unknown_released_key_fails() -> None:
    released = lego_state(10)
    released["model.sound_projector.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown layout.*sound_projector"):
        convert_released(released, _clip_state(), vit_depth=EVA_DEPTH).check_complete("release")


def test_wrong_audio_logit_scale_fails() -> None:
    released = lego_state(10)
    released["model.audio_encoder.modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(
        0.0
    )
    with pytest.raises(ValueError, match="logit scale 1"):
        convert_released(released, _clip_state(), vit_depth=EVA_DEPTH)


def _write_release(folder: Path, released: dict, order: list[str], base: int) -> None:
    """Two .bin shards with an index, and the tokenizer's added_tokens.json."""
    folder.mkdir()
    keys = sorted(released)
    shards = {
        "pytorch_model-00001-of-00002.bin": keys[::2],
        "pytorch_model-00002-of-00002.bin": keys[1::2],
    }
    for name, part in shards.items():
        torch.save({k: released[k] for k in part}, folder / name)
    weight_map = {k: name for name, part in shards.items() for k in part}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "added_tokens.json").write_text(
        json.dumps({t: base + i for i, t in enumerate(order)})
    )


def test_cli_converts_a_sharded_release_into_a_loadable_checkpoint(setup, tmp_path: Path) -> None:
    tok, base, model, _, _ = setup
    order = RELEASED_TOKEN_ORDER[::-1]  # whatever the release's tokenizer says wins
    released = lego_state(base, seed=3)
    _write_release(tmp_path / "release", released, order, base)
    (tmp_path / "clip").mkdir()
    save_file(_clip_state(), str(tmp_path / "clip" / "model.safetensors"))
    out, adapters = tmp_path / "out" / "gg.safetensors", tmp_path / "out" / "adapters.safetensors"
    main(
        [
            "--released",
            str(tmp_path / "release"),
            "--clip",
            str(tmp_path / "clip"),
            "--out",
            str(out),
            "--adapters-out",
            str(adapters),
            "--vit-depth",
            str(EVA_DEPTH),
        ]
    )
    load_weights(model, out, strict=True)
    emb = model.llm.get_input_embeddings().weight
    for token in SPECIAL_TOKENS:
        theirs = released["model.embed_tokens.weight"][base + order.index(token)]
        assert torch.equal(emb[tok.convert_tokens_to_ids(token)], theirs)
    shared = load_file(str(adapters))
    assert shared and all(k.startswith("branches.") and ".adapter." in k for k in shared)
    assert set(shared) == {k for k in model.state_dict() if ".adapter." in k}
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["dropped"]) | set(report["sources"].values()) >= set(released)


def test_target_ids_come_from_the_evaluation_tokenizer(tmp_path: Path) -> None:
    """A tokenizer that already holds the tokens (the release's own) keeps their ids."""
    from groundinggpt.convert.__main__ import target_token_ids

    tok = build_tokenizer()
    base = len(tok)
    assert target_token_ids(None, base + 9) == {t: base + i for i, t in enumerate(SPECIAL_TOKENS)}
    tok.add_special_tokens({"additional_special_tokens": RELEASED_TOKEN_ORDER})
    tok.save_pretrained(tmp_path)
    ids = target_token_ids(str(tmp_path), base + 9)
    assert ids == {t: base + RELEASED_TOKEN_ORDER.index(t) for t in SPECIAL_TOKENS}
    with pytest.raises(ValueError, match="tokens with ours"):
        target_token_ids(str(tmp_path), base + 10)


def test_released_config_differences_are_listed(tmp_path: Path) -> None:
    from groundinggpt.convert.released import REFERENCE_CONFIG, check_released_config

    assert check_released_config(tmp_path) == []
    (tmp_path / "config.json").write_text(json.dumps(REFERENCE_CONFIG | {"video_token_len": 32}))
    assert check_released_config(tmp_path) == [
        "video_token_len: release 32, model=groundinggpt_7b 64"
    ]
