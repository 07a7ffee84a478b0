"""Frozen modality encoders: media tensors -> features for the trainable adapters.

- `ClipImageEncoder`: CLIP ViT (HF ``CLIPVisionModel``), patch features of one hidden layer
  (``hidden_layers``: of several, for the region encoder).
- `BlipVideoEncoder`: per frame, EVA-CLIP ViT (timm ``Eva``) + ``ln_vision`` + BLIP-2 Q-Former
  (HF ``Blip2QFormerModel``) with 32 learned queries, as in BLIP-2 / Video-LLaMA.
- `ImageBindAudioEncoder`: ImageBind-Huge's audio branch (see `imagebind_audio`).

Sizes come from constructor keyword arguments only (defaults = GroundingGPT-7B's encoders), so
the same classes build the tiny test models and the real ones. Weights start random; CLIP takes
an HF folder or hub id as ``pretrained=``, and the BLIP-2 and ImageBind checkpoints are read by
`groundinggpt.convert.components` (``pretrained_video_encoder``, ``pretrained_audio_encoder``:
this package never imports the converters). Loading fails on any missing key. Callers
freeze the encoders and run them under ``torch.no_grad()``; they also keep them in ``eval()``
mode, since the BLIP-2 Q-Former and ImageBind keep their dropout / drop-path layers.

Every encoder has ``out_dim`` (feature width) and ``num_tokens`` (features per image, per
frame or per clip).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.eva import Eva
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from groundinggpt.models.adapters import QFormer
from groundinggpt.models.imagebind_audio import ImageBindAudioEncoder


def _check_images(pixel_values: torch.Tensor, image_size: int, ndim: int, layout: str) -> None:
    shape = tuple(pixel_values.shape)
    if pixel_values.ndim != ndim or shape[-3:] != (3, image_size, image_size):
        raise ValueError(f"expected {layout} with S={image_size}, got {shape}")


class ClipImageEncoder(nn.Module):
    """CLIP vision tower returning the patch tokens of one hidden layer (LLaVA style).

    Args:
        image_size: input side ``S`` in pixels.
        patch_size: ViT patch side.
        hidden_size: ViT width (= ``out_dim``).
        num_layers: ViT depth.
        num_heads: attention heads.
        intermediate_size: MLP hidden width.
        select_layer: index into ``hidden_states`` (0 = embeddings, -1 = last layer).
        pretrained: HF model path or hub name to load with ``from_pretrained``; its config
            must match the size arguments. ``None`` builds a random model without disk access.

    Attributes:
        out_dim: feature width.
        num_tokens: patch tokens per image, ``(S / patch_size) ** 2``.

    Example:
        >>> enc = ClipImageEncoder(image_size=28, hidden_size=32, num_layers=2, num_heads=2,
        ...                        intermediate_size=64)
        >>> enc(torch.zeros(1, 3, 28, 28)).shape
        torch.Size([1, 4, 32])
    """

    def __init__(
        self,
        image_size: int = 336,
        patch_size: int = 14,
        hidden_size: int = 1024,
        num_layers: int = 24,
        num_heads: int = 16,
        intermediate_size: int = 4096,
        select_layer: int = -2,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if not -(num_layers + 1) <= select_layer <= num_layers:
            raise ValueError(f"select_layer {select_layer} is out of range for {num_layers} layers")
        config = CLIPVisionConfig(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
        )
        if pretrained is None:
            self.model = CLIPVisionModel(config)
        else:
            self.model = CLIPVisionModel.from_pretrained(pretrained)
            _check_same_architecture(config, self.model.config, pretrained)
        self.select_layer = select_layer
        self.image_size = image_size
        self.out_dim = hidden_size
        self.num_tokens = (image_size // patch_size) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, 3, S, S)`` images into ``(B, num_tokens, out_dim)`` patch features."""
        _check_images(pixel_values, self.image_size, 4, "images (B, 3, S, S)")
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]  # drop CLS: (B, N, C)

    def hidden_layers(
        self, pixel_values: torch.Tensor, layers: Sequence[int]
    ) -> list[torch.Tensor]:
        """Patch features of several hidden layers, ``[(B, num_tokens, out_dim)]`` (CLS dropped).

        For the region encoder (GLaMM reads layers -11, -8, -5, -2 of ViT-L/14-336); one pass
        through the ViT. It is never read from the feature cache, which holds
        ``select_layer`` alone.

        Example:
            >>> [f.shape for f in enc.hidden_layers(torch.zeros(1, 3, 28, 28), [-3, -2])]
            [torch.Size([1, 4, 32]), torch.Size([1, 4, 32])]
        """
        _check_images(pixel_values, self.image_size, 4, "images (B, 3, S, S)")
        depth = self.model.config.num_hidden_layers
        bad = [i for i in layers if not -(depth + 1) <= i <= depth]
        if bad:
            raise ValueError(f"hidden layers {bad} are out of range for {depth} layers")
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return [out.hidden_states[i][:, 1:] for i in layers]


_ARCH_FIELDS = (
    "image_size",
    "patch_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def _check_same_architecture(
    expected: CLIPVisionConfig, loaded: CLIPVisionConfig, path: str
) -> None:
    # Adapters are sized from our kwargs: a checkpoint of another size must fail loudly.
    diff = {
        f: (getattr(expected, f), getattr(loaded, f))
        for f in _ARCH_FIELDS
        if getattr(expected, f) != getattr(loaded, f)
    }
    if diff:
        detail = ", ".join(f"{f}: config {a} vs checkpoint {b}" for f, (a, b) in diff.items())
        raise ValueError(f"{path}: CLIP checkpoint does not match the encoder config ({detail})")


class BlipVideoEncoder(nn.Module):
    """Per-frame BLIP-2 visual features: EVA ViT -> ``ln_vision`` -> Q-Former queries.

    The ViT returns all tokens (CLS included) of its last block without a final norm, exactly
    what LAVIS's EVA-CLIP-g feeds to ``ln_vision``. The frames of all videos run as one
    ``(B * T)`` batch.

    Args:
        image_size: frame side ``S`` in pixels.
        patch_size: ViT patch side.
        vit_width: ViT width.
        vit_depth: ViT blocks (EVA-CLIP-g has 40; BLIP-2 uses the first 39).
        vit_heads: ViT attention heads.
        vit_mlp_ratio: ViT MLP hidden width over ``vit_width``.
        num_query_tokens: learned Q-Former queries (= tokens per frame).
        qformer_hidden_size: Q-Former width (= ``out_dim``).
        qformer_layers: Q-Former layers.
        qformer_heads: Q-Former attention heads.
        qformer_intermediate_size: Q-Former FFN hidden width.
        cross_attention_frequency: Q-Former layer ``i`` reads the frame when ``i % freq == 0``.
        qformer_initializer_range: std of the Q-Former's random init (weights come from
            BLIP-2 at full size; a random toy Q-Former needs a width-scaled value to depend
            on its frames, see `groundinggpt.models.adapters.QFormer`).

    BLIP-2 weights: `groundinggpt.convert.components.pretrained_video_encoder`.

    Attributes:
        out_dim: feature width.
        num_tokens: query tokens per frame.

    Example:
        >>> enc = BlipVideoEncoder(image_size=28, vit_width=32, vit_depth=1, vit_heads=2,
        ...                        num_query_tokens=4, qformer_hidden_size=32, qformer_layers=1,
        ...                        qformer_heads=2, qformer_intermediate_size=64)
        >>> enc(torch.zeros(2, 3, 3, 28, 28)).shape
        torch.Size([2, 3, 4, 32])
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        vit_width: int = 1408,
        vit_depth: int = 39,
        vit_heads: int = 16,
        vit_mlp_ratio: float = 4.3637,
        num_query_tokens: int = 32,
        qformer_hidden_size: int = 768,
        qformer_layers: int = 12,
        qformer_heads: int = 12,
        qformer_intermediate_size: int = 3072,
        cross_attention_frequency: int = 2,
        qformer_initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        self.visual_encoder = Eva(
            img_size=image_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="",
            embed_dim=vit_width,
            depth=vit_depth,
            num_heads=vit_heads,
            mlp_ratio=vit_mlp_ratio,
            qkv_bias=True,
            use_post_transformer_norm=False,
        )
        self.ln_vision = nn.LayerNorm(vit_width)
        self.qformer = QFormer(
            num_query_tokens,
            qformer_hidden_size,
            qformer_layers,
            qformer_heads,
            qformer_intermediate_size,
            encoder_hidden_size=vit_width,
            cross_attention_frequency=cross_attention_frequency,
            initializer_range=qformer_initializer_range,
        )
        self.image_size = image_size
        self.out_dim = qformer_hidden_size
        self.num_tokens = num_query_tokens

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, T, 3, S, S)`` frames into ``(B, T, num_tokens, out_dim)``."""
        _check_images(frames, self.image_size, 5, "frames (B, T, 3, S, S)")
        batch, num_frames = frames.shape[:2]
        x = self.visual_encoder.forward_features(frames.flatten(0, 1))  # (B * T, 1 + N, W)
        x = self.qformer(self.ln_vision(x))  # (B * T, Q, D)
        return x.view(batch, num_frames, self.num_tokens, self.out_dim)


__all__ = ["BlipVideoEncoder", "ClipImageEncoder", "ImageBindAudioEncoder"]
