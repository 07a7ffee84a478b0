"""Trainable adapters: frozen-encoder features -> embeddings in the LLM's width.

One adapter per modality (GroundingGPT's reference sizes are the defaults):

- image: `MLPAdapter`, Linear-GELU-Linear on every CLIP patch (576 tokens per image).
- video and audio: one class, `QFormerAdapter`: a position embedding per frame / clip + a
  2-layer Q-Former whose learned queries read all inputs, then a Linear. Video
  (`VideoQFormerAdapter`): 64 queries over all frames' BLIP-2 query tokens (64 tokens per
  video); audio (`AudioQFormerAdapter`): 8 queries over the per-clip ImageBind embeddings
  (8 tokens per sound). Those two names build it with GroundingGPT's sizes and key names.

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
        initializer_range: std of the random init of queries and linear weights (BERT's
            0.02). At BLIP-2's width (768) that lets the queries read their input; at a toy
            width (64) attention outputs start ~1/30 of the queries' scale and the outputs
            barely depend on the input (experiments/2026-12-06_toy_qformer_init/): toy
            configs use the fan-in scale ``hidden_size ** -0.5``.

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
        initializer_range: float = 0.02,
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
            initializer_range=initializer_range,
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


def output_norm(width: int, gain: float | None) -> nn.LayerNorm | None:
    """A final ``LayerNorm`` of an adapter's output tokens, its gain starting at ``gain``."""
    if gain is None:
        return None
    norm = nn.LayerNorm(width)
    nn.init.constant_(norm.weight, gain)
    return norm


class MLPAdapter(nn.Module):
    """Linear-GELU-Linear applied to every token (LLaVA-1.5's ``mlp2x_gelu`` projector), or one
    linear projection (``depth=1``, LLaVA-1's projector).

    Args:
        in_dim: encoder feature width.
        out_dim: LLM hidden size (also the hidden width of the MLP).
        depth: 2 (Linear-GELU-Linear) or 1 (Linear): the adapter ablation's two projectors.
        out_norm: if set, a final ``LayerNorm`` whose gain starts at this value, so that the
            output tokens start at the scale of the LLM's token embeddings (e.g. its
            ``initializer_range``) instead of ~15x larger on a random-init LLM. ``None`` (the
            reference projector) adds no module, so checkpoints keep their keys.

    Example:
        >>> MLPAdapter(in_dim=16, out_dim=32)(torch.zeros(2, 9, 16)).shape
        torch.Size([2, 9, 32])
        >>> round(MLPAdapter(in_dim=16, out_dim=32, out_norm=0.02).norm.weight[0].item(), 4)
        0.02
        >>> sum(p.numel() for p in MLPAdapter(in_dim=16, out_dim=32, depth=1).parameters())
        544
    """

    def __init__(
        self,
        in_dim: int = 1024,
        out_dim: int = 4096,
        out_norm: float | None = None,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if depth not in (1, 2):
            raise ValueError(f"MLPAdapter depth is 1 (linear) or 2 (mlp2x_gelu), got {depth}")
        self.fc1 = nn.Linear(in_dim, out_dim)
        # depth 1 adds no modules: its checkpoints hold fc1 only
        self.act = nn.GELU() if depth == 2 else nn.Identity()
        self.fc2 = nn.Linear(out_dim, out_dim) if depth == 2 else nn.Identity()
        self.norm = output_norm(out_dim, out_norm)
        self.out_dim = out_dim

    def num_tokens(self, num_input_tokens: int) -> int:
        """One output token per encoder token."""
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, N, in_dim)`` to ``(B, N, out_dim)``."""
        out = self.fc2(self.act(self.fc1(features)))  # (B, N, out_dim)
        return out if self.norm is None else self.norm(out)


class QFormerAdapter(nn.Module):
    """Q-Former adapter: a sequence of encoder outputs -> a fixed number of LLM tokens.

    Serves video (per-frame query tokens) and audio (per-clip embeddings) alike: every input
    position (a frame or a clip) gets its position embedding, ``num_query_tokens`` learned
    queries read all inputs (cross-attention in every layer), and a linear layer projects them
    to the LLM width. The position embedding is named ``<positions>_position_embedding``
    (``frame_position_embedding``, ``clip_position_embedding``), the names the released
    checkpoint converts to.

    Args:
        in_dim: width of the encoder outputs.
        max_positions: frames / clips the position embedding covers.
        num_query_tokens: learned queries (= tokens per media item).
        hidden_size: Q-Former width; default ``in_dim``.
        num_layers: Q-Former layers.
        num_heads: attention heads.
        intermediate_size: Q-Former FFN hidden width.
        out_dim: LLM hidden size.
        positions: what one input position is: ``"frame"`` or ``"clip"``.
        initializer_range: std of the Q-Former's random init (see `QFormer`).
        out_norm: as `MLPAdapter`'s: a final ``LayerNorm`` whose gain starts at this value
            (the output tokens start at the LLM's embedding scale); ``None`` adds no module.

    Example:
        >>> ad = QFormerAdapter(in_dim=32, max_positions=8, num_query_tokens=4, num_layers=1,
        ...                     num_heads=2, intermediate_size=64, out_dim=48)
        >>> ad(torch.zeros(2, 5, 3, 32)).shape  # (B, T, Q, D) frame tokens
        torch.Size([2, 4, 48])
    """

    def __init__(
        self,
        in_dim: int = 768,
        max_positions: int = 64,
        num_query_tokens: int = 64,
        hidden_size: int | None = None,
        num_layers: int = 2,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        out_dim: int = 4096,
        positions: str = "frame",
        initializer_range: float = 0.02,
        out_norm: float | None = None,
    ) -> None:
        super().__init__()
        hidden = hidden_size or in_dim
        self.positions = positions
        self.max_positions = max_positions
        self.out_dim = out_dim
        self.add_module(f"{positions}_position_embedding", nn.Embedding(max_positions, in_dim))
        self.qformer = QFormer(
            num_query_tokens, hidden, num_layers, num_heads, intermediate_size, in_dim, 1,
            initializer_range,
        )  # fmt: skip
        self.proj = nn.Linear(hidden, out_dim)
        self.norm = output_norm(out_dim, out_norm)

    def num_tokens(self, num_input_tokens: int | None = None) -> int:
        """Always ``num_query_tokens``, whatever the number of frames or clips."""
        return self.qformer.num_query_tokens

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``(B, T, Q, in_dim)`` frames or ``(B, C, in_dim)`` clips (as ``positions``) to
        ``(B, num_query_tokens, out_dim)``.

        ``mask`` ``(B, T)``, 1 = a real frame or clip, hides padded positions from the queries.
        """
        layout = (
            "(B, T, Q, D) frame tokens" if self.positions == "frame" else "(B, C, D) embeddings"
        )
        if inputs.ndim != (4 if self.positions == "frame" else 3):
            raise ValueError(f"expected {layout}, got {tuple(inputs.shape)}")
        if inputs.ndim == 3:
            inputs = inputs.unsqueeze(2)  # one token per clip
        length, per_position = inputs.shape[1:3]
        if length > self.max_positions:
            raise ValueError(
                f"got {length} {self.positions}s, the adapter supports at most {self.max_positions}"
            )
        embedding = getattr(self, f"{self.positions}_position_embedding")
        x = inputs + embedding(torch.arange(length, device=inputs.device))[None, :, None]
        x = x.flatten(1, 2)  # (B, T * Q, D)
        if mask is not None:
            mask = mask.repeat_interleave(per_position, dim=1)
        out = self.proj(self.qformer(x, mask))  # (B, num_query_tokens, out_dim)
        return out if self.norm is None else self.norm(out)


def VideoQFormerAdapter(
    in_dim: int = 768,
    max_frames: int = 64,
    num_query_tokens: int = 64,
    num_layers: int = 2,
    num_heads: int = 12,
    intermediate_size: int = 3072,
    out_dim: int = 4096,
    initializer_range: float = 0.02,
    out_norm: float | None = None,
) -> QFormerAdapter:
    """GroundingGPT's video adapter: a `QFormerAdapter` over frames, as wide as its input."""
    return QFormerAdapter(
        in_dim, max_frames, num_query_tokens, None, num_layers, num_heads, intermediate_size,
        out_dim, positions="frame", initializer_range=initializer_range, out_norm=out_norm,
    )  # fmt: skip


def AudioQFormerAdapter(
    in_dim: int = 1024,
    max_clips: int = 8,
    num_query_tokens: int = 8,
    hidden_size: int = 768,
    num_layers: int = 2,
    num_heads: int = 12,
    intermediate_size: int = 3072,
    out_dim: int = 4096,
    initializer_range: float = 0.02,
    out_norm: float | None = None,
) -> QFormerAdapter:
    """GroundingGPT's audio adapter: a `QFormerAdapter` over clips, 768 wide on 1024 inputs."""
    return QFormerAdapter(
        in_dim, max_clips, num_query_tokens, hidden_size, num_layers, num_heads,
        intermediate_size, out_dim, positions="clip", initializer_range=initializer_range,
        out_norm=out_norm,
    )  # fmt: skip


__all__ = ["AudioQFormerAdapter", "MLPAdapter", "QFormer", "QFormerAdapter", "VideoQFormerAdapter"]
