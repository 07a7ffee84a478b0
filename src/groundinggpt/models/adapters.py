"""Trainable adapters: frozen-encoder features -> embeddings in the LLM's width.

One adapter per modality (GroundingGPT's reference sizes are the defaults):

- image: `MLPAdapter`, Linear-GELU-Linear on every CLIP patch (576 tokens per image).
- video: `VideoQFormerAdapter`, frame position embedding + a 2-layer Q-Former whose 64 learned
  queries read all frames' BLIP-2 query tokens, then a Linear (64 tokens per video).
- audio: `AudioQFormerAdapter`, clip position embedding + a 2-layer Q-Former whose 8 learned
  queries read the per-clip ImageBind embeddings, then a Linear (8 tokens per sound).

Every adapter has ``out_dim`` and ``num_tokens(num_input_tokens)``: the number of embeddings
it emits per media item, which the LLM side needs to expand a placeholder.

The Q-Formers are Hugging Face's `Blip2QFormerModel` (query-only BERT layers, no text
embeddings and no text FFN: the same parts GroundingGPT keeps of its LAVIS Q-Formers).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel


class QFormer(nn.Module):
    """Learned queries that cross-attend to a token sequence (BLIP-2's Q-Former).

    Args:
        num_query_tokens: number of learned queries ``Q`` (= output tokens).
        hidden_size: query width ``H``.
        num_layers: Q-Former layers.
        num_heads: attention heads.
        intermediate_size: FFN hidden width.
        encoder_hidden_size: width ``E`` of the tokens the queries read.
        cross_attention_frequency: a layer cross-attends when ``index % frequency == 0``.

    Example:
        >>> qf = QFormer(4, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
        ...              encoder_hidden_size=16)
        >>> qf(torch.zeros(2, 10, 16)).shape
        torch.Size([2, 4, 32])
    """

    def __init__(
        self,
        num_query_tokens: int,
        hidden_size: int = 768,
        num_layers: int = 2,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        encoder_hidden_size: int = 768,
        cross_attention_frequency: int = 1,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of {num_heads} heads")
        config = Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            cross_attention_frequency=cross_attention_frequency,
            encoder_hidden_size=encoder_hidden_size,
        )
        self.model = Blip2QFormerModel(config)
        self.query_tokens = nn.Parameter(torch.empty(1, num_query_tokens, hidden_size))
        nn.init.normal_(self.query_tokens, std=config.initializer_range)
        self.num_query_tokens = num_query_tokens
        self.out_dim = hidden_size

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Read ``(B, L, E)`` tokens (``mask`` ``(B, L)``, 1 = keep) into ``(B, Q, H)``."""
        queries = self.query_tokens.expand(tokens.shape[0], -1, -1)  # (B, Q, H)
        out = self.model(
            query_embeds=queries, encoder_hidden_states=tokens, encoder_attention_mask=mask
        )
        return out.last_hidden_state


class MLPAdapter(nn.Module):
    """Linear-GELU-Linear applied to every token (LLaVA-1.5's ``mlp2x_gelu`` projector).

    Args:
        in_dim: encoder feature width.
        out_dim: LLM hidden size (also the hidden width of the MLP).
        out_norm: if set, a final ``LayerNorm`` whose gain starts at this value, so that the
            output tokens start at the scale of the LLM's token embeddings (e.g. its
            ``initializer_range``) instead of ~15x larger on a random-init LLM. ``None`` (the
            reference projector) adds no module, so checkpoints keep their keys.

    Example:
        >>> MLPAdapter(in_dim=16, out_dim=32)(torch.zeros(2, 9, 16)).shape
        torch.Size([2, 9, 32])
        >>> round(MLPAdapter(in_dim=16, out_dim=32, out_norm=0.02).norm.weight[0].item(), 4)
        0.02
    """

    def __init__(
        self, in_dim: int = 1024, out_dim: int = 4096, out_norm: float | None = None
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.norm = None
        if out_norm is not None:
            self.norm = nn.LayerNorm(out_dim)
            nn.init.constant_(self.norm.weight, out_norm)
        self.out_dim = out_dim

    def num_tokens(self, num_input_tokens: int) -> int:
        """One output token per encoder token."""
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, N, in_dim)`` to ``(B, N, out_dim)``."""
        out = self.fc2(self.act(self.fc1(features)))  # (B, N, out_dim)
        return out if self.norm is None else self.norm(out)


class VideoQFormerAdapter(nn.Module):
    """Video Q-Former: per-frame query tokens -> a fixed number of video tokens.

    Each frame's ``Q`` tokens get that frame's position embedding; all ``T * Q`` tokens are
    then read by ``num_query_tokens`` learned queries (cross-attention in every layer) and
    projected to the LLM width.

    Args:
        in_dim: width of the frame tokens (the frame Q-Former's hidden size).
        max_frames: frames the position embedding covers.
        num_query_tokens: learned video queries (= tokens per video).
        num_layers: Q-Former layers.
        num_heads: attention heads.
        intermediate_size: Q-Former FFN hidden width.
        out_dim: LLM hidden size.

    Example:
        >>> ad = VideoQFormerAdapter(in_dim=32, max_frames=8, num_query_tokens=4, num_layers=1,
        ...                          num_heads=2, intermediate_size=64, out_dim=48)
        >>> ad(torch.zeros(2, 5, 3, 32)).shape
        torch.Size([2, 4, 48])
    """

    def __init__(
        self,
        in_dim: int = 768,
        max_frames: int = 64,
        num_query_tokens: int = 64,
        num_layers: int = 2,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        out_dim: int = 4096,
    ) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.out_dim = out_dim
        self.frame_position_embedding = nn.Embedding(max_frames, in_dim)
        self.qformer = QFormer(
            num_query_tokens, in_dim, num_layers, num_heads, intermediate_size, in_dim, 1
        )
        self.proj = nn.Linear(in_dim, out_dim)

    def num_tokens(self, num_input_tokens: int | None = None) -> int:
        """Always ``num_query_tokens``, whatever the number of frames."""
        return self.qformer.num_query_tokens

    def forward(
        self, frame_tokens: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map ``(B, T, Q, in_dim)`` frame tokens to ``(B, num_query_tokens, out_dim)``.

        ``frame_mask`` ``(B, T)`` (1 = real frame) hides padded frames from the queries.
        """
        if frame_tokens.ndim != 4:
            raise ValueError(f"expected (B, T, Q, D) frame tokens, got {tuple(frame_tokens.shape)}")
        frames, queries = frame_tokens.shape[1:3]
        if frames > self.max_frames:
            raise ValueError(f"got {frames} frames, the adapter supports at most {self.max_frames}")
        positions = torch.arange(frames, device=frame_tokens.device)
        x = frame_tokens + self.frame_position_embedding(positions)[None, :, None]  # (B, T, Q, D)
        x = x.flatten(1, 2)  # (B, T * Q, D)
        mask = None if frame_mask is None else frame_mask.repeat_interleave(queries, dim=1)
        return self.proj(self.qformer(x, mask))  # (B, num_query_tokens, out_dim)


class AudioQFormerAdapter(nn.Module):
    """Audio Q-Former: per-clip embeddings -> a fixed number of audio tokens.

    Each clip embedding gets its clip position embedding; ``num_query_tokens`` learned queries
    read the clips (cross-attention in every layer) and are projected to the LLM width.

    Args:
        in_dim: width of the clip embeddings (ImageBind output).
        max_clips: clips the position embedding covers.
        num_query_tokens: learned audio queries (= tokens per sound).
        hidden_size: Q-Former width.
        num_layers: Q-Former layers.
        num_heads: attention heads.
        intermediate_size: Q-Former FFN hidden width.
        out_dim: LLM hidden size.

    Example:
        >>> ad = AudioQFormerAdapter(in_dim=16, max_clips=4, num_query_tokens=2, hidden_size=32,
        ...                          num_layers=1, num_heads=2, intermediate_size=64, out_dim=48)
        >>> ad(torch.zeros(2, 3, 16)).shape
        torch.Size([2, 2, 48])
    """

    def __init__(
        self,
        in_dim: int = 1024,
        max_clips: int = 8,
        num_query_tokens: int = 8,
        hidden_size: int = 768,
        num_layers: int = 2,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        out_dim: int = 4096,
    ) -> None:
        super().__init__()
        self.max_clips = max_clips
        self.out_dim = out_dim
        self.clip_position_embedding = nn.Embedding(max_clips, in_dim)
        self.qformer = QFormer(
            num_query_tokens, hidden_size, num_layers, num_heads, intermediate_size, in_dim, 1
        )
        self.proj = nn.Linear(hidden_size, out_dim)

    def num_tokens(self, num_input_tokens: int | None = None) -> int:
        """Always ``num_query_tokens``, whatever the number of clips."""
        return self.qformer.num_query_tokens

    def forward(
        self, clip_embeds: torch.Tensor, clip_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map ``(B, C, in_dim)`` clip embeddings to ``(B, num_query_tokens, out_dim)``.

        ``clip_mask`` ``(B, C)`` (1 = real clip) hides padded clips from the queries.
        """
        if clip_embeds.ndim != 3:
            raise ValueError(f"expected (B, C, D) clip embeddings, got {tuple(clip_embeds.shape)}")
        clips = clip_embeds.shape[1]
        if clips > self.max_clips:
            raise ValueError(f"got {clips} clips, the adapter supports at most {self.max_clips}")
        positions = torch.arange(clips, device=clip_embeds.device)
        x = clip_embeds + self.clip_position_embedding(positions)  # (B, C, in_dim)
        return self.proj(self.qformer(x, clip_mask))  # (B, num_query_tokens, out_dim)


__all__ = ["AudioQFormerAdapter", "MLPAdapter", "QFormer", "VideoQFormerAdapter"]
