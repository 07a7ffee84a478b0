"""The pixel decoder (GLaMM, arXiv 2311.03356): each ``[SEG]`` token of an answer becomes a mask.

SAM's pieces come from Hugging Face ``transformers`` (`SamModel`): its ViT image encoder
(frozen by default) embeds the image once, and its mask decoder (trainable) is prompted with
one sparse prompt token per ``[SEG]``: the LLM's last-layer hidden state at the position that
predicts ``[SEG]`` (LISA's and GLaMM's convention), through ``seg_projection`` (LLM width ->
LLM width -> SAM prompt width, ReLU between). Any number of ``[SEG]`` tokens per answer gives
as many masks, in answer order.

Masks are predicted in SAM's input frame: the image resized so that its longest side is
``image_size`` and padded bottom-right (`groundinggpt.grounding.masks` maps them back to the
original pixels).

Example:
    >>> decoder = PixelDecoder(SamModel(config), llm_width=128)
    >>> embeddings = decoder.embed_images(pixels)          # (M, C, h, w)
    >>> logits = decoder(embeddings, [hidden_0, hidden_1])  # [(n_0, 4h, 4w), (n_1, 4h, 4w)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PixelDecoder(nn.Module):
    """SAM prompted by ``[SEG]`` hidden states.

    Args:
        sam: a ``transformers.SamModel`` (random init here; weights from a converter).
        llm_width: the LLM's hidden size (input of ``seg_projection``).
        freeze_encoder: keep SAM's ViT frozen (GLaMM trains only the mask decoder and the
            projection; the prompt encoder's no-mask embedding is frozen with the encoder).
    """

    def __init__(self, sam: nn.Module, llm_width: int, freeze_encoder: bool = True) -> None:
        super().__init__()
        self.sam = sam
        prompt_width = sam.config.mask_decoder_config.hidden_size
        self.seg_projection = nn.Sequential(
            nn.Linear(llm_width, llm_width), nn.ReLU(), nn.Linear(llm_width, prompt_width)
        )
        self.image_size = int(sam.config.vision_config.image_size)
        if freeze_encoder:
            for module in (sam.vision_encoder, sam.prompt_encoder, sam.shared_image_embedding):
                module.requires_grad_(False)

    def encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.sam.vision_encoder.parameters())

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(M, 3, S, S)`` SAM-frame pixels -> image embeddings ``(M, C, h, w)``."""
        encoder = self.sam.vision_encoder
        dtype = next(encoder.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen()):
            return encoder(pixels.to(dtype)).last_hidden_state

    def forward(
        self, image_embeddings: torch.Tensor, seg_hidden: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """One ``(n_i, 4h, 4w)`` mask-logit tensor per image from its ``(n_i, D)`` hidden states.

        An image with no ``[SEG]`` (``n_i == 0``) gets an empty ``(0, 4h, 4w)`` tensor.
        """
        if len(seg_hidden) != image_embeddings.shape[0]:
            raise ValueError(
                f"{len(seg_hidden)} hidden-state groups for {image_embeddings.shape[0]} images"
            )
        positions = self.sam.get_image_wide_positional_embeddings()  # (1, C, h, w)
        h, w = image_embeddings.shape[-2:]
        out = []
        for embedding, hidden in zip(image_embeddings, seg_hidden, strict=True):
            if hidden.shape[0] == 0:
                out.append(embedding.new_zeros(0, 4 * h, 4 * w))
                continue
            out.append(self._decode(embedding[None], positions, hidden))
        return out

    def _decode(self, embedding, positions, hidden: torch.Tensor) -> torch.Tensor:
        decoder = self.sam.mask_decoder
        dtype = decoder.iou_token.weight.dtype
        prompts = self.seg_projection(hidden.to(self.seg_projection[0].weight.dtype))
        sparse = prompts.to(dtype)[None, :, None, :]  # (1, n, 1, C): one mask per prompt
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = dense.expand(1, -1, *embedding.shape[-2:]).to(dtype)
        masks, _ = decoder(
            embedding.to(dtype), positions.to(dtype), sparse, dense, multimask_output=False
        )
        return masks[0, :, 0]  # (n, 4h, 4w)


def seg_positions(input_ids: torch.Tensor, seg_token_id: int) -> torch.Tensor:
    """``(B, T)`` bool: positions whose next token is ``[SEG]`` (their hidden state prompts SAM).

    Example:
        >>> seg_positions(torch.tensor([[5, 7, 9, 7]]), 7)
        tensor([[ True, False,  True, False]])
    """
    nxt = input_ids[:, 1:] == seg_token_id
    return torch.cat([nxt, torch.zeros_like(nxt[:, :1])], dim=1)


__all__ = ["PixelDecoder", "seg_positions"]
