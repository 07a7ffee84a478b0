"""ImageBind's audio branch (preprocessor, trunk, head, postprocessor) as one small module.

GroundingGPT encodes each 2 s clip of a sound with the audio branch of ImageBind-Huge and feeds
the per-clip embeddings (after ImageBind's normalise-and-scale postprocessor) to its audio
Q-Former. No maintained library ships this branch, so it is rebuilt here from the structure of
``facebookresearch/ImageBind`` (``imagebind_model.py``, ``multimodal_preprocessors.py``,
``transformer.py``), with its numbers for ``imagebind_huge``: embed 768, 12 blocks, 12 heads,
drop path 0.1 (progressive), output 1024, fixed logit scale 20.

Pipeline for one clip, fbank ``(1, 128, 204)``:
    Conv2d(1 -> D, kernel 16, stride 10, no bias) -> 12 x 19 = 228 patches -> LayerNorm
    -> prepend CLS -> + learned position embedding (229 tokens)
    -> pre-norm blocks (nn.MultiheadAttention with bias_k/bias_v, GELU MLP x4) -> no final norm
    -> LayerNorm(eps 1e-6) -> CLS token -> Linear(D -> 1024, no bias)
    -> L2 normalise -> x 20.

One difference from ``ImageBindModel.forward``: given ``(B, C, ...)`` clips, ImageBind averages
the C clip embeddings; GroundingGPT (through Video-LLaMA's copy) keeps them, and so do we.

Parameter names follow ImageBind's layout so ``imagebind_huge.pth`` loads after a prefix
rename (`groundinggpt.convert.components.convert_imagebind_audio_state_dict` does it):

=================================================================== ==========================
``imagebind_huge.pth`` key                                          this module
=================================================================== ==========================
``modality_preprocessors.audio.rgbt_stem.proj.weight``              ``patch_embed.proj.weight``
``modality_preprocessors.audio.rgbt_stem.norm_layer.{weight,bias}`` ``patch_embed.norm.*``
``modality_preprocessors.audio.cls_token``                          ``cls_token``
``modality_preprocessors.audio.pos_embedding_helper.pos_embed``     ``pos_embed``
``modality_trunks.audio.blocks.{i}.*`` (``attn.in_proj_weight``,    ``blocks.{i}.*`` (same
``attn.in_proj_bias``, ``attn.bias_k``, ``attn.bias_v``,            names below ``blocks``)
``attn.out_proj.*``, ``norm_1.*``, ``mlp.fc1.*``, ``mlp.fc2.*``,
``norm_2.*``)
``modality_heads.audio.0.{weight,bias}`` (LayerNorm)                ``head_norm.*``
``modality_heads.audio.2.weight`` (Linear)                          ``head_proj.weight``
``modality_postprocessors.audio.1.log_logit_scale`` (buffer)        dropped: ``logit_scale``
                                                                    is a fixed float
=================================================================== ==========================

The audio stem's conv has a single layer, so ImageBind stores it as ``rgbt_stem.proj`` (not
``proj.1`` as in the vision stem, whose ``proj.0`` is a parameter-free ``PadIm2Video``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn


def _num_positions(size: int, kernel_size: int, stride: int) -> int:
    if size < kernel_size:
        raise ValueError(f"input size {size} is smaller than the kernel size {kernel_size}")
    return (size - kernel_size) // stride + 1


class AudioPatchEmbed(nn.Module):
    """Overlapping fbank patches: conv without bias, then LayerNorm over channels.

    Args:
        embed_dim: patch embedding width ``D``.
        kernel_size: square conv kernel.
        stride: conv stride (smaller than the kernel: patches overlap).

    Example:
        >>> AudioPatchEmbed(32)(torch.zeros(2, 1, 128, 204)).shape
        torch.Size([2, 228, 32])
    """

    def __init__(self, embed_dim: int, kernel_size: int = 16, stride: int = 10) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=kernel_size, stride=stride, bias=False)
        self.norm = nn.LayerNorm(embed_dim)  # ImageBind leaves this one at eps 1e-5

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.proj(fbank)  # (N, D, H', W')
        x = x.flatten(2).transpose(1, 2)  # (N, H' * W', D), row-major like ImageBind
        return self.norm(x)


class Mlp(nn.Module):
    """Two-layer GELU MLP with ImageBind's ``fc1``/``fc2`` names."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AudioBlock(nn.Module):
    """Pre-norm transformer block of ImageBind's ``SimpleTransformer`` (no layer scale).

    Args:
        dim: token width.
        num_heads: attention heads.
        drop_path: stochastic depth rate of both residual branches.
        mlp_ratio: MLP hidden width over ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, drop_path: float = 0.0, mlp_ratio: int = 4):
        super().__init__()
        # add_bias_kv appends a learned key/value token: part of the checkpoint, so kept.
        self.attn = nn.MultiheadAttention(
            dim, num_heads, bias=True, add_bias_kv=True, batch_first=True
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)  # (N, L, D)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class ImageBindAudioEncoder(nn.Module):
    """ImageBind audio encoder: fbank clips -> one normalised, scaled embedding per clip.

    Sizes come from the constructor only; the defaults are ImageBind-Huge's audio branch.

    Args:
        embed_dim: trunk width.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        out_dim: embedding size after the head projection.
        num_mel_bins: fbank height ``M`` the position embedding is sized for.
        target_length: fbank width ``L`` (frames) the position embedding is sized for.
        kernel_size: patch conv kernel.
        stride: patch conv stride.
        drop_path: largest stochastic depth rate (grows linearly from 0 over the blocks).
        logit_scale: fixed factor applied after L2 normalisation.

    ImageBind weights: `groundinggpt.convert.components.pretrained_audio_encoder`.

    Attributes:
        out_dim: size of each clip embedding.
        num_tokens: embeddings per clip (1).
        num_patches: fbank patches per clip.

    Example:
        >>> enc = ImageBindAudioEncoder(embed_dim=32, depth=2, num_heads=2, out_dim=32)
        >>> enc(torch.zeros(2, 3, 1, 128, 204)).shape
        torch.Size([2, 3, 32])
    """

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        out_dim: int = 1024,
        num_mel_bins: int = 128,
        target_length: int = 204,
        kernel_size: int = 16,
        stride: int = 10,
        drop_path: float = 0.1,
        logit_scale: float = 20.0,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.num_tokens = 1
        self.input_size = (num_mel_bins, target_length)
        self.logit_scale = float(logit_scale)
        self.num_patches = _num_positions(num_mel_bins, kernel_size, stride) * _num_positions(
            target_length, kernel_size, stride
        )

        self.patch_embed = AudioPatchEmbed(embed_dim, kernel_size, stride)
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + self.num_patches, embed_dim))
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(AudioBlock(embed_dim, num_heads, r) for r in rates)
        self.head_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_proj = nn.Linear(embed_dim, out_dim, bias=False)
        self._init_weights(embed_dim)

    @torch.no_grad()
    def _init_weights(self, embed_dim: int) -> None:
        # ImageBind's init: OpenCLIP-style tokens, Xavier linears with zero bias in the trunk.
        nn.init.normal_(self.cls_token, std=embed_dim**-0.5)
        nn.init.normal_(self.pos_embed, std=embed_dim**-0.5)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, C, 1, M, L)`` fbank clips into ``(B, C, out_dim)`` embeddings."""
        self._check_input(clips)
        batch, num_clips = clips.shape[:2]
        x = self.patch_embed(clips.flatten(0, 1))  # (B * C, P, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B * C, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B * C, 1 + P, D)
        for block in self.blocks:
            x = block(x)
        emb = self.head_proj(self.head_norm(x)[:, 0])  # (B * C, out_dim)
        emb = self.postprocess(emb)
        return emb.view(batch, num_clips, self.out_dim)

    def postprocess(self, emb: torch.Tensor) -> torch.Tensor:
        """L2-normalise the last dim and scale by the fixed logit scale."""
        # ImageBind clips exp(log scale) at 100; a fixed scale only needs the same clip.
        return F.normalize(emb, dim=-1) * min(self.logit_scale, 100.0)

    def _check_input(self, clips: torch.Tensor) -> None:
        expected = (1, *self.input_size)
        if clips.ndim != 5 or tuple(clips.shape[2:]) != expected:
            raise ValueError(
                f"expected fbank clips of shape (B, C, {', '.join(map(str, expected))}), "
                f"got {tuple(clips.shape)}"
            )


__all__ = [
    "ImageBindAudioEncoder",
]
