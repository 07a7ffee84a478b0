"""GroundingGPT: modality branches whose embeddings are spliced into a causal LLM's sequence."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from groundinggpt.modalities import (
    PIXEL_TOKENS,
    REGION_TOKEN,
    SEG_TOKEN,
    SPECIAL_TOKENS,
    ModalitySpec,
    modality_specs,
)
from groundinggpt.models.llm import add_special_tokens
from groundinggpt.models.pixel_decoder import PixelDecoder, seg_positions
from groundinggpt.models.region_encoder import RegionEncoder


class ModalityBranch(nn.Module):
    """A frozen-by-default encoder followed by a trainable adapter.

    Args:
        encoder: media tensor -> features (e.g. CLIP patch tokens).
        adapter: features -> ``(B, N, D_llm)`` embeddings.
    """

    def __init__(self, encoder: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter

    def forward(
        self,
        media: torch.Tensor | None,
        paths: Sequence[str] | None = None,
        cached: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``(M, ...)`` media -> ``(M, N, D_llm)``; ``paths`` (one per item) enable the cache.

        ``cached``: ``(features, hit)`` when the data pipeline already read some items'
        encoder features from the cache (`groundinggpt.data.dataset.collate_cached_features`):
        ``hit`` marks them among all ``M`` items, ``media`` holds only the others, and
        ``paths`` all ``M`` files.
        """
        return self.adapt(self.encode_media(media, paths, cached))

    def encode_media(
        self,
        media: torch.Tensor | None,
        paths: Sequence[str] | None = None,
        cached: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The encoder's features of every item: read by the data pipeline (``cached``), else
        from `feature_cache`, else encoded from ``media`` (and stored in the cache)."""
        cache = self.feature_cache if self.frozen() else None
        if cached is None and (cache is None or paths is None or len(paths) != media.shape[0]):
            return self._encode(media)
        hit = [False] * media.shape[0] if cached is None else cached[1].tolist()
        read = iter(() if cached is None else cached[0])
        found = [next(read) if h else None for h in hit]
        # media holds the items the pipeline did not read, in item order
        row_of = {i: row for row, i in enumerate(i for i, h in enumerate(hit) if not h)}
        if cache is not None and paths is not None:
            for i in row_of:
                found[i] = cache.get(paths[i])
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            fresh = self._encode(media[[row_of[i] for i in missing]])
            for i, features in zip(missing, fresh, strict=True):
                if cache is not None and paths is not None:
                    cache.put(paths[i], features)
                found[i] = features.detach()
        device = media.device if media is not None else cached[0].device
        out = torch.stack([f.to(device) for f in found])
        return out.to(_dtype_of(self.encoder, out.dtype))

    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.encoder.parameters())

    def _encode(self, media: torch.Tensor) -> torch.Tensor:
        # Skip the encoder's autograd graph when it is frozen: saves most of the memory.
        with torch.set_grad_enabled(not self.frozen() and torch.is_grad_enabled()):
            # A frozen encoder may be stored in bf16 while the adapter keeps fp32 weights.
            return self.encoder(media.to(_dtype_of(self.encoder, media.dtype)))

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        features = features.to(_dtype_of(self.adapter, features.dtype))
        if self.checkpoint_adapter and torch.is_grad_enabled():
            return checkpoint(self.adapter, features, use_reentrant=False)
        return self.adapter(features)  # (B, N, D_llm)

    # A FeatureCache of this frozen encoder's outputs (set by `GroundingGPT.use_feature_cache`).
    feature_cache = None

    checkpoint_adapter: bool = False  # gradient checkpointing of the adapter (a memory switch)


def _dtype_of(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype of ``module``'s first parameter (``default`` for inputs otherwise)."""
    if not default.is_floating_point:
        return default
    param = next(module.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else default


class GroundingGPT(nn.Module):
    """Modality branches keyed by name plus a Hugging Face causal LM.

    Each media item becomes ``N`` embeddings that replace the ``N`` patch tokens of its
    placeholder, in the order the items appear in the batch.

    Args:
        llm: any ``transformers`` causal LM (its vocabulary already holds the special tokens).
        branches: ``{"image": ModalityBranch, "video": ..., "audio": ...}``.
        patch_token_ids: the patch token id per modality.
        modality_token_ids: every special token id per modality (start, patch, end); default
            the patch ids alone.
        media_tokens: embeddings per media item per modality (what each placeholder expands
            to); default: derived from each branch's encoder and adapter.
        pixel_decoder: turns the hidden state before each ``[SEG]`` into a mask
            (`PixelDecoder`); None for a box-and-span model.
        seg_token_id: the id of ``[SEG]`` (required with ``pixel_decoder``).
        region_encoder: turns boxes on the image into one embedding each, which replaces
            the embedding of each ``<region>`` token (`RegionEncoder`; needs an image branch).
        region_token_id: the id of ``<region>`` (required with ``region_encoder``).

    Example:
        >>> model = build_grounding_model(tokenizer, llm, encoders, adapters)
        >>> model.media_tokens  # derived from the encoders and adapters
        {'image': 16, 'video': 8, 'audio': 8}
        >>> out = model(input_ids, attention_mask, labels=labels, media={"image": pixels})
    """

    def __init__(
        self,
        llm: nn.Module,
        branches: Mapping[str, ModalityBranch],
        patch_token_ids: Mapping[str, int],
        modality_token_ids: Mapping[str, Sequence[int]] | None = None,
        media_tokens: Mapping[str, int] | None = None,
        pixel_decoder: PixelDecoder | None = None,
        seg_token_id: int | None = None,
        region_encoder: RegionEncoder | None = None,
        region_token_id: int | None = None,
    ) -> None:
        super().__init__()
        if pixel_decoder is not None and seg_token_id is None:
            raise ValueError("a pixel decoder needs the id of the [SEG] token")
        if region_encoder is not None and (region_token_id is None or "image" not in branches):
            raise ValueError("a region encoder needs the id of <region> and an image branch")
        self.llm = llm
        self.branches = nn.ModuleDict(branches)
        self.pixel_decoder = pixel_decoder
        self.seg_token_id = seg_token_id
        self.region_encoder = region_encoder
        self.region_token_id = region_token_id
        self.pixel_token_ids: list[int] = []  # [SEG], <p>, </p> (set by build_grounding_model)
        self.media_tokens = dict(media_tokens or media_token_counts(branches))
        self.patch_token_ids = dict(patch_token_ids)
        # start, patch and end token ids per modality: the rows stage 1 trains
        self.modality_token_ids = {
            m: list(ids)
            for m, ids in (
                modality_token_ids or {m: [i] for m, i in patch_token_ids.items()}
            ).items()
        }

    def encode(
        self,
        media: Mapping[str, torch.Tensor],
        paths: Mapping[str, Sequence[str]] | None = None,
        region_boxes: Sequence[torch.Tensor] | None = None,
        region_images: Sequence[int] | None = None,
        cached: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Branch outputs ``{name: (M, N, D)}`` for every modality present in ``media``.

        ``paths`` (the media files per modality, in item order) lets a branch with a feature
        cache read its encoder's outputs instead of recomputing them. ``region_boxes`` (per
        image with regions, ``(n_i, 4)`` fractions of the padded square) on the images
        ``media["image"][region_images]`` add ``"region"``: ``(K, D)``, one embedding per box
        (`encode_regions`). ``cached`` (``batch["cached_features"]``): per modality, the
        encoder features the data pipeline read from the feature cache and which items they
        are (`ModalityBranch.forward`).
        """
        paths, cached = paths or {}, cached or {}
        features = {
            name: branch(media.get(name), paths.get(name), cached.get(name))
            for name, branch in self.branches.items()
            if name in cached or (media.get(name) is not None and media[name].shape[0] > 0)
        }
        if region_boxes:
            images = media["image"][list(region_images)]
            features["region"] = self.encode_regions(images, region_boxes)
        return features

    def encode_regions(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(M, 3, S, S)`` images and their ``(n_i, 4)`` boxes -> ``(sum n_i, D)`` embeddings.

        The image encoder's hidden layers are computed from the pixels here, not read from
        the feature cache (which holds one layer); a frozen encoder runs without autograd.
        """
        if self.region_encoder is None:
            raise ValueError("this model has no region encoder (model.region_encoder)")
        branch = self.branches["image"]
        encoder = branch.encoder
        with torch.set_grad_enabled(not branch.frozen() and torch.is_grad_enabled()):
            pixels = images.to(_dtype_of(encoder, images.dtype))
            levels = encoder.hidden_layers(pixels, self.region_encoder.layers)
        return self.region_encoder(levels, boxes)

    def use_feature_cache(
        self,
        root: str,
        modalities: Sequence[str] | None = None,
        preprocessing: Mapping[str, object] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[str]:
        """Cache the outputs of every frozen encoder (of ``modalities``) under ``root``.

        Returns:
            the modalities whose encoder is cached (a trainable encoder never is).
        """
        from groundinggpt.models.feature_cache import FeatureCache, encoder_fingerprint

        used = []
        for name, branch in self.branches.items():
            if (modalities is None or name in modalities) and branch.frozen():
                extra = (preprocessing or {}).get(name)
                fingerprint = encoder_fingerprint(branch.encoder, extra)
                branch.feature_cache = FeatureCache(root, fingerprint, dtype)
                used.append(name)
        return used

    def feature_caches(self) -> dict[str, Any]:
        """``{modality: FeatureCache}`` of the branches that have one (`use_feature_cache`)."""
        return {
            name: branch.feature_cache
            for name, branch in self.branches.items()
            if branch.feature_cache is not None
        }

    def splice(self, input_ids: torch.Tensor, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Token embeddings with every modality's patch positions filled by ``features``."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # (B, T, D)
        for name in self.branches:
            mask = input_ids == self.patch_token_ids[name]  # (B, T)
            feats = features.get(name)
            if feats is None:
                if mask.any():
                    raise ValueError(f"{name} placeholders in the batch but no {name} media")
                continue
            feats = feats.to(embeds.dtype)  # (M, N, D)
            if feats.shape[0] * feats.shape[1] != int(mask.sum()):
                raise ValueError(
                    f"{name}: {feats.shape[0]} items x {feats.shape[1]} tokens do not fill "
                    f"{int(mask.sum())} placeholder positions (the prompts were built for "
                    f"{self.media_tokens[name]} tokens per item: a formatter of another model?)"
                )
            # masked_scatter fills positions in row-major order: sample by sample, item by item.
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]))
        return self._splice_regions(embeds, input_ids, features.get("region"))

    def _splice_regions(
        self, embeds: torch.Tensor, input_ids: torch.Tensor, regions: torch.Tensor | None
    ) -> torch.Tensor:
        """``embeds`` with the ``<region>`` positions filled by ``regions`` (row-major order)."""
        if self.region_token_id is None:
            return embeds
        mask = input_ids == self.region_token_id
        n = int(mask.sum())
        if regions is None or regions.shape[0] != n:
            given = 0 if regions is None else regions.shape[0]
            if n == 0 and given == 0:
                return embeds
            raise ValueError(f"{n} <region> tokens in the batch, {given} region embeddings")
        return embeds.masked_scatter(mask.unsqueeze(-1), regions.to(embeds.dtype))

    def absent_branch_term(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``0 *`` the trainable parameters of every branch that ``features`` lacks, of the
        pixel decoder (always: SAM's IoU head, its other mask tokens' MLPs and the point
        prompts never reach a ``[SEG]`` mask loss), and of
        the region encoder when it has no ``"region"``.

        Added to the loss, it gives those parameters a (zero) gradient, so data-parallel
        training sees the same parameters used on every rank and every step, whatever media
        a batch holds: plain DDP (no ``find_unused_parameters`` graph search) stays in step.
        """
        params = [
            p
            for name, branch in self.branches.items()
            if name not in features
            for p in branch.parameters()
            if p.requires_grad
        ]
        if self.pixel_decoder is not None:
            params += [p for p in self.pixel_decoder.parameters() if p.requires_grad]
        if self.region_encoder is not None and "region" not in features:
            params += [p for p in self.region_encoder.parameters() if p.requires_grad]
        return zero_term(params, self.llm.get_input_embeddings().weight)

    def gradient_checkpointing(self, llm: bool = True, adapters: bool = True) -> None:
        """Recompute activations in the backward pass instead of keeping them (memory switch).

        ``llm`` uses Hugging Face's own activation (gradient) checkpointing (non-reentrant, so it
        works with frozen embeddings and LoRA); ``adapters`` checkpoints each adapter call.
        """
        if llm:
            enable = getattr(self.llm, "activation_checkpointing_enable", None)
            if enable is not None:  # transformers >= 5
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.llm.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
            self.llm.config.use_cache = False  # the cache is for generation, not training
        for branch in self.branches.values():
            branch.checkpoint_adapter = adapters

    def embed(self, input_ids: torch.Tensor, media: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Token embeddings with every modality's patch positions filled by its branch output."""
        return self.splice(input_ids, self.encode(media))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: Mapping[str, torch.Tensor],
        labels: torch.Tensor | None = None,
        features: Mapping[str, torch.Tensor] | None = None,
        position_ids: torch.Tensor | None = None,
        hidden_states: bool = False,
    ):
        """Causal-LM output; pass ``features`` (from :meth:`encode`) to skip re-encoding.

        ``position_ids`` marks packed rows (several samples per row, positions restarting at
        each, see `groundinggpt.data.packing`): the LLM then gets no 2-D attention mask and
        no KV cache, so no sample attends to another: ``"sdpa_varlen"`` (the default of the
        LLM configs, `groundinggpt.models.varlen_attention`) runs attention per sample,
        ``"sdpa"`` builds the block-diagonal causal mask from the restarts. ``hidden_states`` adds every layer's
        hidden states to the output (what :meth:`predict_masks` reads).
        """
        features = self.encode(media) if features is None else features
        embeds = self.splice(input_ids, features)
        extra = {"output_hidden_states": True} if hidden_states else {}
        if position_ids is None:
            return self.llm(
                inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **extra
            )
        return self.llm(
            inputs_embeds=embeds, position_ids=position_ids, labels=labels, use_cache=False, **extra
        )

    def predict_masks(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        seg_pixels: torch.Tensor,
        seg_counts: Sequence[int],
    ) -> list[torch.Tensor]:
        """Mask logits in SAM's frame, one ``(n_i, h, w)`` tensor per segmented image.

        Args:
            hidden: the LLM's last-layer hidden states ``(B, T, D)`` of ``input_ids``.
            input_ids: ``(B, T)``; every ``[SEG]`` in it is one mask (row-major order).
            seg_pixels: ``(M, 3, S, S)`` the SAM-frame image of each sample that has masks,
                in batch order.
            seg_counts: ``[SEG]`` tokens per such sample (summing to those in ``input_ids``).
        """
        if self.pixel_decoder is None:
            raise ValueError("this model has no pixel decoder (model.pixel_decoder)")
        states = hidden[seg_positions(input_ids, self.seg_token_id)]  # (K, D), row-major
        counts = [int(n) for n in seg_counts]
        if states.shape[0] != sum(counts) or len(counts) != seg_pixels.shape[0]:
            raise ValueError(
                f"{states.shape[0]} [SEG] tokens in the batch, {sum(counts)} masks expected "
                f"over {len(counts)} images ({seg_pixels.shape[0]} given)"
            )
        embeddings = self.pixel_decoder.embed_images(seg_pixels)
        return self.pixel_decoder(embeddings, list(states.split(counts)))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: Mapping[str, torch.Tensor],
        features: Mapping[str, torch.Tensor] | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Greedy (by default) decoding with the KV cache; returns only the new tokens (B, T_new).

        ``input_ids`` must be left-padded so that every prompt ends at the last position.
        ``features`` (from :meth:`encode`) skips re-encoding the media.
        """
        features = self.encode(media) if features is None else features
        embeds = self.splice(input_ids, features)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("use_cache", True)
        return self.llm.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
        )


def zero_term(params: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """A scalar ``0`` that depends on every tensor of ``params`` (zero gradients for all).

    ``like`` gives the device and dtype of the result when ``params`` is empty.
    """
    total = torch.zeros((), device=like.device, dtype=torch.float32)
    for p in params:
        total = total + p.sum().float() * 0.0
    return total


def media_token_counts(branches: Mapping[str, ModalityBranch]) -> dict[str, int]:
    """Embeddings per media item of each branch: its adapter's output for its encoder's tokens.

    Example:
        >>> media_token_counts(model.branches)  # tiny: CLIP 16 patches -> MLP; Q-Former queries
        {'image': 16, 'video': 8, 'audio': 8}
    """
    counts = {}
    for name, branch in branches.items():
        encoder_tokens = getattr(branch.encoder, "num_tokens", None)
        if encoder_tokens is None or not hasattr(branch.adapter, "num_tokens"):
            raise TypeError(
                f"{name}: the encoder needs a `num_tokens` attribute and the adapter a "
                "`num_tokens(num_input_tokens)` method (see models/encoders.py, adapters.py)"
            )
        counts[name] = int(branch.adapter.num_tokens(encoder_tokens))
    return counts


def build_grounding_model(
    tokenizer,
    llm: nn.Module,
    encoders: Mapping[str, nn.Module],
    adapters: Mapping[str, nn.Module],
    pixel_decoder: Callable[[int], PixelDecoder] | None = None,
    region_encoder: Callable[..., RegionEncoder] | None = None,
) -> GroundingGPT:
    """Assemble a :class:`GroundingGPT` (the Hydra entry point for ``configs/model``).

    Adds the special tokens to ``tokenizer``/``llm`` and checks that every encoder has an
    adapter and every adapter emits the LLM's width. The tokens per media item
    (``model.media_tokens``) follow from each encoder and adapter (`media_token_counts`): a
    changed ``patch_size`` or query count needs no other edit. ``pixel_decoder`` (a partial
    taking the LLM width, ``configs/model/pixel_decoder``) adds ``[SEG]``, ``<p>``, ``</p>``
    and the mask decoder; ``region_encoder`` (a partial taking the image encoder's and the
    LLM's widths, ``configs/model/region_encoder``) adds ``<region>`` and the region encoder.
    """
    if set(encoders) != set(adapters):
        raise ValueError(f"encoders {sorted(encoders)} and adapters {sorted(adapters)} differ")
    text_tokens = list(PIXEL_TOKENS if pixel_decoder is not None else ())
    text_tokens += [REGION_TOKEN] if region_encoder is not None else []
    add_special_tokens(tokenizer, llm, text_tokens)
    width = llm.get_input_embeddings().weight.shape[1]
    for name, adapter in adapters.items():
        if getattr(adapter, "out_dim", width) != width:
            raise ValueError(f"{name} adapter emits {adapter.out_dim}, the LLM expects {width}")
    specs: dict[str, ModalitySpec] = modality_specs({m: 1 for m in encoders})
    patch_ids = {m: tokenizer.convert_tokens_to_ids(s.patch) for m, s in specs.items()}
    token_ids = {
        m: tokenizer.convert_tokens_to_ids([s.start, s.patch, s.end]) for m, s in specs.items()
    }
    branches = {m: ModalityBranch(encoders[m], adapters[m]) for m in encoders}
    parts: dict[str, Any] = {}
    if pixel_decoder is not None:
        parts["pixel_decoder"] = pixel_decoder(llm_width=width)
        parts["seg_token_id"] = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    if region_encoder is not None:
        if "image" not in encoders:
            raise ValueError("a region encoder reads the image encoder: the model has none")
        parts["region_encoder"] = region_encoder(in_dim=encoders["image"].out_dim, llm_width=width)
        parts["region_token_id"] = tokenizer.convert_tokens_to_ids(REGION_TOKEN)
    model = GroundingGPT(llm, branches, patch_ids, token_ids, **parts)
    if pixel_decoder is not None:
        model.pixel_token_ids = tokenizer.convert_tokens_to_ids(PIXEL_TOKENS)
    return model


def region_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The region boxes of a collated batch as keyword arguments of `GroundingGPT.encode`.

    Example:
        >>> features = model.encode(batch["media"], **region_inputs(batch))
    """
    if "region_boxes" not in batch:
        return {}
    return {"region_boxes": batch["region_boxes"], "region_images": batch["region_images"]}


__all__ = [
    "GroundingGPT",
    "ModalityBranch",
    "build_grounding_model",
    "media_token_counts",
    "region_inputs",
    "SPECIAL_TOKENS",
]
