"""Fewer padded positions per step: samples packed into rows, or batches grouped by length.

Packing (`pack_rows`, used by `GroundingCollator(pack_length=...)`): the samples of one batch
are laid end to end in as few rows of at most ``pack_length`` tokens as the balanced
longest-first heuristic finds, and the rows are made as even as possible, so the batch pads
to its longest row instead of to its longest sample. Each sample keeps its own positions
(``position_ids`` restart at 0 where it begins) and attends only to itself: given
``position_ids``, no 2-D attention mask and no KV cache, ``transformers``' ``"sdpa"`` (and
eager) derives the block-diagonal causal mask from the restarts (``T x T`` per row), while
``"sdpa_varlen"`` (`groundinggpt.models.varlen_attention`, the LLM configs' setting) runs
attention per sample and builds no mask; ``flash_attention_2`` separates the samples only in a
batch of one row. Labels never cross a boundary: the first position of every sample
(its ``<s>``) has no label, so the last token of one sample is not trained to predict the
first of the next. A step still takes ``batch_size`` samples, so the mixture sampler, replay
and mid-epoch resume are untouched.

Length grouping (`group_by_length`, used by `MixtureSampler(lengths=...)`): the alternative
where packing is off. The epoch order is cut into mega-batches of ``group_batches`` steps,
each sorted by length and cut into steps; the steps are then shuffled. It is a
deterministic function of the epoch's order, so a resumed epoch is still exact.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import torch


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens, evenly filled.

    Places the samples longest first, each into the least-filled row (LPT), from the fewest
    rows the total allows (``ceil(sum / capacity)``) up to a few past the first count whose
    rows all fit, and keeps the fitting layout with the fewest padded positions (rows pad to
    the longest row). Rows list
    their samples in their original order.

    Raises:
        ValueError: a single sample is longer than ``capacity``.

    Example:
        >>> pack_rows([5, 3, 4, 4], capacity=8)
        [[0, 1], [2, 3]]
    """
    if not lengths:
        return []
    if max(lengths) > capacity:
        raise ValueError(f"a sample of {max(lengths)} tokens does not fit pack_length {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows = max(1, math.ceil(sum(lengths) / capacity))
    best, best_cost, tried_after_fit = None, None, 0
    while rows <= len(lengths) and tried_after_fit <= _EXTRA_ROWS:
        members, widest = _lpt(order, lengths, rows)
        if widest <= capacity:
            cost = rows * widest  # positions of the padded batch
            if best_cost is None or cost < best_cost:
                best, best_cost = members, cost
            tried_after_fit += 1
        rows += 1
    assert best is not None  # one sample per row always fits
    return sorted((sorted(m) for m in best if m), key=lambda m: m[0])


# Row counts `pack_rows` tries after the first that fits (each is one LPT pass).
_EXTRA_ROWS = 3


def _lpt(order: list[int], lengths: Sequence[int], rows: int) -> tuple[list[list[int]], int]:
    """Longest-processing-time placement of ``order`` into ``rows``; (members, widest row)."""
    heap = [(0, r) for r in range(rows)]
    members: list[list[int]] = [[] for _ in range(rows)]
    for i in order:
        load, r = heapq.heappop(heap)
        members[r].append(i)
        heapq.heappush(heap, (load + lengths[i], r))
    return members, max(load for load, _ in heap)


def packed_positions(lengths: Sequence[int], width: int) -> torch.Tensor:
    """Position ids of one packed row: ``0..n-1`` per sample, then the padding (its own block)."""
    pieces = [torch.arange(n) for n in lengths]
    pad = width - sum(lengths)
    if pad:
        pieces.append(torch.arange(pad))
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def group_by_length(
    order: torch.Tensor,
    lengths: torch.Tensor,
    step_size: int,
    group_steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``order`` rearranged so that each run of ``step_size`` positions has similar lengths.

    Mega-batches of ``step_size * group_steps`` consecutive positions are sorted by length
    (longest first) and cut into steps; the whole steps are shuffled together and any
    incomplete step stays last, so step boundaries stay where the loader expects them.

    Args:
        order: the epoch's sample indices.
        lengths: token length of every sample index (``lengths[order]`` is used).
        step_size: positions per optimiser step over all ranks (batch size x ranks).
        group_steps: steps per sorted mega-batch.
        generator: the epoch's generator (the result is a deterministic function of it).
    """
    if step_size < 1 or group_steps < 1:
        raise ValueError("step_size and group_steps must be >= 1")
    mega = step_size * group_steps
    steps = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[torch.sort(lengths[chunk], descending=True, stable=True).indices]
        steps += list(chunk.split(step_size))
    tail = [steps.pop()] if steps and len(steps[-1]) < step_size else []
    shuffled = [steps[i] for i in torch.randperm(len(steps), generator=generator).tolist()]
    parts = shuffled + tail
    return torch.cat(parts) if parts else order
