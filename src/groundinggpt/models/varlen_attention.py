"""``attn_implementation="sdpa_varlen"``: packed rows attend per sample, not through a T x T mask.

Why: a packed row (several samples, ``position_ids`` restarting at 0 at each, no 2-D
``attention_mask``, no KV cache; see `groundinggpt.data.packing`) makes ``transformers``'
``"sdpa"`` build a dense block-diagonal causal mask and run SDPA's masked kernel over the
whole row, so attention costs ``T**2`` per row (``T`` = pack length) however short the
samples are. Here each sample (segment) runs ``scaled_dot_product_attention(is_causal=True)``
alone, segments of equal length batched into one call, so it costs ``sum(L_i**2)`` and no
mask is built; on a GPU that is SDPA's flash kernel per sample. It needs no flash-attn
package, and it takes any number of packed rows: ``"flash_attention_2"`` runs its varlen
kernel from the position ids only for flattened batches of one row (transformers 5.25,
``_is_packed_sequence``); with several packed rows it attends across the samples of a row.

Everything else goes to ``"sdpa"`` unchanged, bit for bit: padded batches (a 2-D mask),
forwards with a KV cache (``generate()``; read from the ``use_cache`` the decoder layers pass
on; as in ``"sdpa"``, restarting positions are not packing there), sliding windows, bidirectional masks, soft-capping and models that overlay
their own mask functions. The one case that differs: a 2-D mask without padding (which
``"sdpa"`` skips) together with restarting position ids. ``"sdpa"`` then attends across the
whole row; here, as in ``"flash_attention_2"``, the restarts separate samples. Not supported:
multimodal ``transformers`` models whose masks add ``block_sequence_ids`` overlays
(PaliGemma, Gemma 4): the mask interface cannot see them; the text LLMs used here have none.
The speed-up needs transformers >= 5: the mask arguments of 4.x cannot tell packing from a
custom mask function, so there the mask is always built and this is ``"sdpa"`` (untested).

The segment bounds are read on the host once per forward (a sync) and the Python loop breaks
``torch.compile`` graphs; ``module.compile_llm`` is not meant to be combined with it.

Importing this module registers the name; `groundinggpt.models.llm` imports it, so any
``attn_implementation: sdpa_varlen`` of an LLM config built by this package resolves.

Example:
    >>> import groundinggpt.models.varlen_attention  # noqa: F401
    >>> llm = LlamaForCausalLM(LlamaConfig(..., attn_implementation="sdpa_varlen"))
    >>> llm.set_attn_implementation("sdpa")  # and back, on the same weights
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "sdpa_varlen"


def varlen_mask(**kwargs: Any) -> torch.Tensor | None:
    """``"sdpa"``'s mask (``sdpa_mask(**kwargs)``), except ``None`` where it is causal or packed.

    With no 2-D mask, no cache offset, as many keys as queries, no sliding window and no
    custom mask function, ``"sdpa"``'s mask is the causal one (which it skips too) or, for
    restarting position ids, the block-diagonal one that `varlen_attention` follows from the
    position ids: building it would cost ``batch * T**2``.
    """
    if _causal_or_packed(kwargs):
        return None
    return sdpa_mask(**kwargs)


def _causal_or_packed(mask_kwargs: dict[str, Any]) -> bool:
    """Whether the mask ``mask_kwargs`` describe can only be causal or packed-causal."""
    q_offset = mask_kwargs.get("q_offset", 0)
    return (
        # transformers 4.x passes ``cache_position`` and no ``use_vmap``: its custom mask
        # functions are indistinguishable from packing there, so always build the mask.
        "q_length" in mask_kwargs
        and "use_vmap" in mask_kwargs
        and not mask_kwargs["use_vmap"]  # or/and mask functions overlaid by the model
        and "allow_is_bidirectional_skip" not in mask_kwargs  # only bidirectional masks pass it
        and mask_kwargs.get("attention_mask") is None
        and isinstance(q_offset, int)  # a tensor offset: a static cache
        and q_offset == 0
        and mask_kwargs.get("kv_offset", 0) == 0
        and mask_kwargs["kv_length"] == mask_kwargs["q_length"]
        and mask_kwargs.get("local_size") is None
    )


def segment_starts(
    position_ids: torch.Tensor | None,
    batch_size: int,
    cu_seq_lens: torch.Tensor | None = None,
) -> list[int] | None:
    """Flat (``row * T + t``) start of every segment, then ``batch * T``; ``None`` if unpacked.

    ``cu_seq_lens`` (flattened batches of one row, as ``transformers``' flattening collator
    passes them) wins over ``position_ids`` when it covers the row; otherwise a segment starts
    wherever a position is not the previous one plus 1, as ``"sdpa"`` reads packing
    (``transformers.masking_utils.find_packed_sequence_indices``).

    Example:
        >>> segment_starts(torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]), 2)
        [0, 3, 5, 7, 10]
    """
    if position_ids is None or position_ids.shape[-1] < 2:
        return None
    length = position_ids.shape[-1]
    if cu_seq_lens is not None and batch_size == 1:
        bounds = [int(b) for b in cu_seq_lens.tolist()]
        if bounds[0] == 0 and bounds[-1] == length:
            return bounds if len(bounds) > 2 else None
    positions = position_ids.expand(batch_size, -1)
    new = torch.ones_like(positions, dtype=torch.bool)  # (B, T): a segment starts here
    new[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    starts = new.flatten().nonzero().flatten().tolist()  # the one host sync
    if len(starts) == batch_size:  # only the row starts: nothing is packed
        return None
    return [*starts, batch_size * length]


# The bounds of the last ``position_ids`` read: every layer of a forward (and its
# recomputation under activation checkpointing) gets the same tensor, so the host sync
# happens once per forward instead of once per layer. ``_version`` catches in-place edits.
_last_read: tuple[weakref.ref, int, int, list[int] | None] | None = None


def _cached_segment_starts(position_ids: torch.Tensor | None, batch_size: int) -> list[int] | None:
    """`segment_starts` of ``position_ids``, read once per tensor (see ``_last_read``)."""
    global _last_read
    if position_ids is None:
        return None
    if _last_read is not None:
        ref, version, batch, starts = _last_read
        if ref() is position_ids and version == position_ids._version and batch == batch_size:
            return starts
    starts = segment_starts(position_ids, batch_size)
    _last_read = (weakref.ref(position_ids), position_ids._version, batch_size, starts)
    return starts


def _packed_segments(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    is_causal: bool | None,
    kwargs: dict[str, Any],
) -> list[int] | None:
    """Segment starts when this call is packed causal self-attention ``"sdpa"`` would mask."""
    length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = (
        attention_mask is None
        and causal
        and length > 1
        and key.shape[2] == length
        # With a cache ``"sdpa"`` does not read packing (later tokens would see every sample).
        and not kwargs.get("use_cache")
        and kwargs.get("sliding_window") is None
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None  # "sdpa" refuses it: let it say so
    )
    if not plain:
        return None
    batch = query.shape[0]
    if kwargs.get("cu_seq_lens_q") is not None:
        return segment_starts(kwargs.get("position_ids"), batch, kwargs["cu_seq_lens_q"])
    return _cached_segment_starts(kwargs.get("position_ids"), batch)


def varlen_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``(B, T, H, D_v)`` attention output; per segment for packed rows, else ``"sdpa"``'s.

    ``query`` ``(B, H, T, D)``, ``key`` ``(B, H_kv, T, D)``, ``value`` ``(B, H_kv, T, D_v)`` as
    every ``transformers`` attention function receives them; ``kwargs`` carry
    ``position_ids`` and ``use_cache``.
    """
    starts = _packed_segments(module, query, key, attention_mask, is_causal, kwargs)
    if starts is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
            is_causal=is_causal, **kwargs,
        )  # fmt: skip
    return attend_per_segment(query, key, value, starts, dropout, scaling), None


def attend_per_segment(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    starts: list[int],
    dropout: float = 0.0,
    scaling: float | None = None,
) -> torch.Tensor:
    """Causal attention within each segment of the flattened ``B * T`` tokens; ``(B, T, H, D_v)``.

    Args:
        query: ``(B, H, T, D)``.
        key: ``(B, H_kv, T, D)``; ``H`` a multiple of ``H_kv`` (grouped-query attention).
        value: ``(B, H_kv, T, D_v)``.
        starts: flat segment starts, then ``B * T`` (`segment_starts`).
    """
    batch, heads, length, _ = query.shape
    gqa = {"enable_gqa": True} if key.shape[1] != heads else {}
    sizes = [end - start for start, end in zip(starts[:-1], starts[1:], strict=True)]
    # Token-major (B * T, H, D), cut with `split`: its backward is one `cat` of the segments'
    # gradients (indexing each segment would give each a zero-filled gradient of the whole row).
    q, k, v = (
        x.transpose(1, 2).reshape(batch * length, x.shape[1], x.shape[-1]).split(sizes)
        for x in (query, key, value)
    )
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        by_size[size].append(i)
    pieces: list[torch.Tensor | None] = [None] * len(sizes)
    for group in by_size.values():
        # One segment: a view; several of one length: one batched call on a stacked copy.
        qs, ks, vs = (
            (
                x[group[0]][None] if len(group) == 1 else torch.stack([x[i] for i in group])
            ).transpose(1, 2)  # (n, H, size, D)
            for x in (q, k, v)
        )
        out = F.scaled_dot_product_attention(
            qs, ks, vs, dropout_p=dropout, scale=scaling, is_causal=True, **gqa
        )  # (n, H, size, D_v)
        for i, piece in zip(group, out.transpose(1, 2).unbind(0), strict=True):
            pieces[i] = piece  # (size, H, D_v)
    return torch.cat(pieces).view(batch, length, heads, value.shape[-1])


def register() -> None:
    """Make ``attn_implementation="sdpa_varlen"`` valid for every ``transformers`` model."""
    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, varlen_mask)


register()
