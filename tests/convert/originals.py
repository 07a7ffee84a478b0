"""Original checkpoint layouts and reference forward passes, written from the original code.

Key names and shapes follow LAVIS (``blip2.py``, ``Qformer.py``, ``eva_vit.py``), ImageBind
(``imagebind_model.py``) and GroundingGPT (``lego/LEGO.py``). The reference computations read
those original keys directly with functional ops, independently of this project's modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
BERT_LN_EPS, VIT_LN_EPS = 1e-12, 1e-6


def _rand(gen: torch.Generator | None, *shape: int, scale: float = 0.2) -> Tensor:
    # gen=None: shapes only (meta tensors), for full-size layouts.
    if gen is None:
        return torch.empty(*shape, device="meta")
    return torch.randn(*shape, generator=gen) * scale


def _linear(sd: dict, key: str, out_dim: int, in_dim: int, gen: torch.Generator) -> None:
    sd[key + ".weight"] = _rand(gen, out_dim, in_dim)
    sd[key + ".bias"] = _rand(gen, out_dim, scale=0.05)


def _norm(sd: dict, key: str, dim: int, gen: torch.Generator) -> None:
    sd[key + ".weight"] = _rand(gen, dim, scale=0.05) + 1
    sd[key + ".bias"] = _rand(gen, dim, scale=0.05)


# ----------------------------------------------------------------------- LAVIS Q-Former


def lavis_qformer(
    prefix: str,
    h: int,
    layers: int,
    inter: int,
    enc: int,
    freq: int,
    gen: torch.Generator,
    text_parts: bool = False,
) -> dict[str, Tensor]:
    """``BertLMHeadModel.bert`` keys; ``text_parts`` keeps what LEGO sets to None."""
    sd: dict[str, Tensor] = {}
    _norm(sd, prefix + "embeddings.LayerNorm", h, gen)
    sd[prefix + "embeddings.position_ids"] = torch.arange(512).expand(1, -1)
    if text_parts:
        sd[prefix + "embeddings.word_embeddings.weight"] = _rand(gen, 30, h)
        sd[prefix + "embeddings.position_embeddings.weight"] = _rand(gen, 512, h)
    for i in range(layers):
        p = f"{prefix}encoder.layer.{i}."
        kinds = [("attention", h)] + ([("crossattention", enc)] if i % freq == 0 else [])
        for kind, kv_dim in kinds:
            _linear(sd, p + kind + ".self.query", h, h, gen)
            _linear(sd, p + kind + ".self.key", h, kv_dim, gen)
            _linear(sd, p + kind + ".self.value", h, kv_dim, gen)
            _linear(sd, p + kind + ".output.dense", h, h, gen)
            _norm(sd, p + kind + ".output.LayerNorm", h, gen)
        ffns = ["intermediate_query", "output_query"] + (
            ["intermediate", "output"] if text_parts else []
        )
        for ffn in ffns:
            if ffn.startswith("intermediate"):
                _linear(sd, p + ffn + ".dense", inter, h, gen)
            else:
                _linear(sd, p + ffn + ".dense", h, inter, gen)
                _norm(sd, p + ffn + ".LayerNorm", h, gen)
    return sd


def _bert_attention(sd: dict, p: str, x: Tensor, kv: Tensor, heads: int) -> Tensor:
    def split(t: Tensor) -> Tensor:  # (B, L, H*d) -> (B, H, L, d)
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    q = split(F.linear(x, sd[p + "self.query.weight"], sd[p + "self.query.bias"]))
    k = split(F.linear(kv, sd[p + "self.key.weight"], sd[p + "self.key.bias"]))
    v = split(F.linear(kv, sd[p + "self.value.weight"], sd[p + "self.value.bias"]))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, Lq, Lk)
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)  # (B, Lq, H*d)
    out = F.linear(ctx, sd[p + "output.dense.weight"], sd[p + "output.dense.bias"])
    return F.layer_norm(
        out + x,
        x.shape[-1:],
        sd[p + "output.LayerNorm.weight"],
        sd[p + "output.LayerNorm.bias"],
        BERT_LN_EPS,
    )


def lavis_qformer_forward(
    sd: dict, prefix: str, queries: Tensor, enc: Tensor, layers: int, heads: int, freq: int
) -> Tensor:
    """``Qformer.bert(query_embeds=queries, encoder_hidden_states=enc)`` for queries only."""
    e = prefix + "embeddings.LayerNorm."
    x = F.layer_norm(queries, queries.shape[-1:], sd[e + "weight"], sd[e + "bias"], BERT_LN_EPS)
    for i in range(layers):
        p = f"{prefix}encoder.layer.{i}."
        x = _bert_attention(sd, p + "attention.", x, x, heads)
        if i % freq == 0:
            x = _bert_attention(sd, p + "crossattention.", x, enc, heads)
        hid = F.gelu(
            F.linear(
                x,
                sd[p + "intermediate_query.dense.weight"],
                sd[p + "intermediate_query.dense.bias"],
            )
        )
        out = F.linear(hid, sd[p + "output_query.dense.weight"], sd[p + "output_query.dense.bias"])
        x = F.layer_norm(
            out + x,
            x.shape[-1:],
            sd[p + "output_query.LayerNorm.weight"],
            sd[p + "output_query.LayerNorm.bias"],
            BERT_LN_EPS,
        )
    return x


# ------------------------------------------------------------------------ LAVIS EVA ViT


def lavis_eva(
    prefix: str, width: int, depth: int, mlp: int, patch: int, patches: int, gen: torch.Generator
) -> dict[str, Tensor]:
    """``create_eva_vit_g`` keys (no final norm, no layer scale, no relative position bias)."""
    sd = {
        prefix + "cls_token": _rand(gen, 1, 1, width),
        prefix + "pos_embed": _rand(gen, 1, patches + 1, width),
        prefix + "patch_embed.proj.weight": _rand(gen, width, 3, patch, patch, scale=0.05),
        prefix + "patch_embed.proj.bias": _rand(gen, width, scale=0.05),
    }
    for i in range(depth):
        p = f"{prefix}blocks.{i}."
        _norm(sd, p + "norm1", width, gen)
        sd[p + "attn.qkv.weight"] = _rand(gen, 3 * width, width)
        sd[p + "attn.q_bias"] = _rand(gen, width, scale=0.05)
        sd[p + "attn.v_bias"] = _rand(gen, width, scale=0.05)
        _linear(sd, p + "attn.proj", width, width, gen)
        _norm(sd, p + "norm2", width, gen)
        _linear(sd, p + "mlp.fc1", mlp, width, gen)
        _linear(sd, p + "mlp.fc2", width, mlp, gen)
    return sd


def lavis_eva_forward(sd: dict, prefix: str, images: Tensor, depth: int, heads: int) -> Tensor:
    """``VisionTransformer.forward_features``: all tokens of the last block, no final norm."""
    w = sd[prefix + "patch_embed.proj.weight"]
    x = F.conv2d(images, w, sd[prefix + "patch_embed.proj.bias"], stride=w.shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (N, P, W)
    cls = sd[prefix + "cls_token"].expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], 1) + sd[prefix + "pos_embed"]
    n, length, width = x.shape
    for i in range(depth):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], VIT_LN_EPS)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(width), sd[p + "attn.v_bias"]])
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], bias).view(n, length, 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, H, L, d)
        attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(n, length, width)
        x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], VIT_LN_EPS)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x


# ----------------------------------------------------------------------- ImageBind audio


def imagebind(
    d: int, depth: int, out_dim: int, patches: int, gen: torch.Generator, other: bool = True
) -> dict[str, Tensor]:
    """``imagebind_model.ImageBindModel`` audio keys (+ one key of two other modalities)."""
    pre, trunk = "modality_preprocessors.audio.", "modality_trunks.audio."
    sd = {
        pre + "cls_token": _rand(gen, 1, 1, d),
        pre + "rgbt_stem.proj.weight": _rand(gen, d, 1, 16, 16, scale=0.05),
        pre + "pos_embedding_helper.pos_embed": _rand(gen, 1, patches + 1, d),
        "modality_heads.audio.2.weight": _rand(gen, out_dim, d),
        "modality_postprocessors.audio.1.log_logit_scale": torch.tensor(20.0, device="cpu").log(),
    }
    _norm(sd, pre + "rgbt_stem.norm_layer", d, gen)
    _norm(sd, "modality_heads.audio.0", d, gen)
    for i in range(depth):
        p = f"{trunk}blocks.{i}."
        sd[p + "attn.in_proj_weight"] = _rand(gen, 3 * d, d)
        sd[p + "attn.in_proj_bias"] = _rand(gen, 3 * d, scale=0.05)
        sd[p + "attn.bias_k"] = _rand(gen, 1, 1, d)
        sd[p + "attn.bias_v"] = _rand(gen, 1, 1, d)
        _linear(sd, p + "attn.out_proj", d, d, gen)
        _norm(sd, p + "norm_1", d, gen)
        _linear(sd, p + "mlp.fc1", 4 * d, d, gen)
        _linear(sd, p + "mlp.fc2", d, 4 * d, gen)
        _norm(sd, p + "norm_2", d, gen)
    if other:
        sd["modality_preprocessors.vision.cls_token"] = _rand(gen, 1, 1, d)
        sd["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(1.0)
    return sd


def imagebind_patch_embed(sd: dict, prefix: str, fbank: Tensor) -> Tensor:
    """``rgbt_stem``: conv (kernel 16, stride 10, no bias) -> tokens -> LayerNorm (eps 1e-5)."""
    pre = prefix + "modality_preprocessors.audio.rgbt_stem."
    x = F.conv2d(fbank, sd[pre + "proj.weight"], stride=10).flatten(2).transpose(1, 2)
    return F.layer_norm(
        x, x.shape[-1:], sd[pre + "norm_layer.weight"], sd[pre + "norm_layer.bias"], 1e-5
    )
