"""The whole GroundingGPT-7B from its Hydra config, on the meta device (no memory, no weights).

Every parameter count and shape is derived here from the reference table of docs/architecture.md, and the
released checkpoint's key layout (written from LEGO.py at full size) converts onto exactly
this model's keys and shapes.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from tests.conftest import compose_config
from tests.convert import originals as orig
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from groundinggpt.convert.released import convert_released

VOCAB, D, LAYERS, MLP = 32000, 4096, 32, 11008


def _vicuna_sized_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cfg")
    cfg = compose_config(
        ["model=groundinggpt_7b", "model/llm=vicuna_7b_skeleton"], tmp, Path(tmp) / "o"
    )
    with torch.device("meta"):
        return hydra.utils.instantiate(
            cfg.model, tokenizer=_vicuna_sized_tokenizer(), _convert_="partial"
        )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _qformer(h: int, layers: int, enc: int, freq: int, queries: int, inter: int = 3072) -> int:
    def attention(kv: int) -> int:
        return (h * h + h) + 2 * (kv * h + h) + (h * h + h) + 2 * h  # q, k, v, out, LN

    ffn = (h * inter + inter) + (inter * h + h) + 2 * h
    cross = sum(attention(enc) for i in range(layers) if i % freq == 0)
    return 2 * h + queries * h + layers * (attention(h) + ffn) + cross


def test_llm_is_vicuna_7b_with_nine_new_rows(model) -> None:
    llm = model.llm
    layer = 4 * D * D + 3 * D * MLP + 2 * D
    vocab = VOCAB + 9
    assert _count(llm) == 2 * vocab * D + LAYERS * layer + D == 6_738_489_344
    assert llm.get_input_embeddings().weight.shape == (vocab, D)
    assert llm.get_output_embeddings().weight.shape == (vocab, D)
    assert llm.dtype == torch.bfloat16


def test_media_tokens_follow_from_the_branches(model) -> None:
    # CLIP-L/14 at 336 px: 24 x 24 patches; the video and audio Q-Formers' query counts.
    assert model.media_tokens == {"image": 576, "video": 64, "audio": 8}


def test_image_branch(model) -> None:
    branch = model.branches["image"]
    assert _count(branch.encoder) == 303_507_456  # CLIP ViT-L/14-336, see test_encoders
    assert (branch.encoder.num_tokens, branch.encoder.select_layer) == (576, -2)
    assert _count(branch.adapter) == (1024 * D + D) + (D * D + D) == 20_979_712


def test_video_branch(model) -> None:
    enc, ada = model.branches["video"].encoder, model.branches["video"].adapter
    assert len(enc.visual_encoder.blocks) == 39 and enc.visual_encoder.embed_dim == 1408
    assert enc.visual_encoder.pos_embed.shape == (1, 257, 1408)  # 224 px / 14 = 16x16 + CLS
    assert _count(enc.ln_vision) == 2 * 1408
    assert enc.qformer.query_tokens.shape == (1, 32, 768)
    assert _count(enc.qformer) == _qformer(768, 12, 1408, 2, 32) == 105_162_240
    assert ada.frame_position_embedding.weight.shape == (64, 768)
    assert ada.qformer.query_tokens.shape == (1, 64, 768)
    video_qformer = _qformer(768, 2, 768, 1, 64)
    assert _count(ada.qformer) == video_qformer
    assert _count(ada) == 64 * 768 + video_qformer + (768 * D + D)
    assert ada.num_tokens() == 64


def test_audio_branch(model) -> None:
    enc, ada = model.branches["audio"].encoder, model.branches["audio"].adapter
    w = 768
    block = (3 * w * w + 3 * w) + 2 * w + (w * w + w) + 2 * w + (w * 4 * w + 4 * w)
    block += 4 * w * w + w + 2 * w
    stem = w * 16 * 16 + 2 * w + w + 229 * w  # conv (no bias), LN, CLS, 12x19 patches + CLS
    assert enc.num_patches == 228
    assert _count(enc) == stem + 12 * block + 2 * w + w * 1024
    assert ada.clip_position_embedding.weight.shape == (8, 1024)
    assert ada.qformer.query_tokens.shape == (1, 8, 768)
    audio_qformer = _qformer(768, 2, 1024, 1, 8)
    assert _count(ada) == 8 * 1024 + audio_qformer + (768 * D + D)
    assert ada.num_tokens() == 8


def _released_shapes() -> dict[str, torch.Tensor]:
    """The release's keys at full size, written from LEGO.py (meta tensors: shapes only)."""
    m = "model."
    with torch.device("meta"):
        config = LlamaConfig(
            vocab_size=VOCAB + 9,
            hidden_size=D,
            intermediate_size=MLP,
            num_hidden_layers=LAYERS,
            num_attention_heads=32,
        )
        sd = dict(LlamaForCausalLM(config).state_dict())
        empty = {
            m + "mm_vision_projector.0.weight": (D, 1024),
            m + "mm_vision_projector.0.bias": (D,),
            m + "mm_vision_projector.2.weight": (D, D),
            m + "mm_vision_projector.2.bias": (D,),
            m + "ln_vision.weight": (1408,),
            m + "ln_vision.bias": (1408,),
            m + "query_tokens": (1, 32, 768),
            m + "video_query_tokens": (1, 64, 768),
            m + "video_frame_position_embedding.weight": (64, 768),
            m + "llama_proj.weight": (D, 768),
            m + "llama_proj.bias": (D,),
            m + "audio_query_tokens": (1, 8, 768),
            m + "audio_position_embedding.weight": (8, 1024),
            m + "audio_llama_proj.weight": (D, 768),
            m + "audio_llama_proj.bias": (D,),
        }
        sd |= {k: torch.empty(s) for k, s in empty.items()}
        sd |= orig.lavis_eva(m + "visual_encoder.", 1408, 39, 6144, 14, 256, None)
        sd |= orig.lavis_qformer(m + "Qformer.bert.", 768, 12, 3072, 1408, 2, None)
        sd |= orig.lavis_qformer(m + "video_Qformer.bert.", 768, 2, 3072, 768, 1, None)
        sd |= orig.lavis_qformer(m + "audio_Qformer.bert.", 768, 2, 3072, 1024, 1, None)
        audio = orig.imagebind(768, 12, 1024, 228, None, other=False)
        sd |= {m + "audio_encoder." + k: v for k, v in audio.items()}
    sd[m + "audio_encoder.modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(
        20.0
    ).log()
    return sd


def test_released_layout_converts_onto_exactly_this_model(model) -> None:
    released = _released_shapes()
    encoder = model.branches["image"].encoder.model
    with torch.device("meta"):
        clip = {
            "vision_model." + k.removeprefix("vision_model."): v
            for k, v in encoder.state_dict().items()
        }
    conversion = convert_released(released, clip)
    conversion.check_complete("release")
    ours = model.state_dict()
    assert set(conversion.state) == set(ours)
    wrong = {
        k: (tuple(v.shape), tuple(ours[k].shape))
        for k, v in conversion.state.items()
        if v.shape != ours[k].shape
    }
    assert not wrong


def test_pretrained_variant_points_every_encoder_at_its_weights(tmp_path: Path) -> None:
    cfg = compose_config(["model=groundinggpt_7b_pretrained"], tmp_path, tmp_path / "o")
    enc = cfg.model.encoders
    assert enc.image.pretrained == "openai/clip-vit-large-patch14-336"
    assert enc.video.pretrained == f"{tmp_path}/ckpt/blip2_pretrained_flant5xxl.pth"
    assert enc.audio.pretrained == f"{tmp_path}/ckpt/imagebind/imagebind_huge.pth"
