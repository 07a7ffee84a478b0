"""How the next-token loss of a batch is averaged: per token, per sample, or in between.

A stage-2 batch mixes samples whose answers differ in length by two orders of magnitude: a
yes/no answer has 3 label tokens (``Yes . </s>``), a box 25, a grounded caption 60 or more.
The usual token average (``transformers``' default) gives every token the same weight, so a
short answer's decisive token is a small share of the batch loss and its gradient is drowned
by the long answers. InternVL 2.5 (Chen et al., 2024, arXiv:2412.05271, section 4.4) names
the three choices and trains with the middle one:

- ``token``: ``sum_i sum_t l_it / sum_i n_i`` (every token alike; long answers dominate);
- ``sample``: ``mean_i (sum_t l_it / n_i)`` (every sample alike; short answers dominate);
- ``square``: weights ``1 / sqrt(n_i)`` per token of sample ``i``, normalised to sum to one.

In general the weight of each token of sample ``i`` is ``n_i ** -p`` (``p`` = 0, 1, 0.5) and
the loss is ``sum_i n_i ** -p * sum_t l_it / sum_i n_i ** (1 - p)``. Samples are rows of a
padded batch, or the ``sequence_ids`` segments of packed rows, so the loss does not depend on
the layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from groundinggpt.data.conversation import IGNORE_INDEX

REDUCTIONS = {"token": 0.0, "square": 0.5, "sample": 1.0}


def check_reduction(name: str) -> str:
    if name not in REDUCTIONS:
        raise ValueError(f"loss_reduction is one of {sorted(REDUCTIONS)}, got {name!r}")
    return name


def sample_ids_of(labels: torch.Tensor, sequence_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, T)`` sample index of each position: ``sequence_ids`` of packed rows, else the row."""
    if sequence_ids is not None:
        return sequence_ids
    rows = torch.arange(labels.shape[0], device=labels.device)
    return rows[:, None].expand_as(labels)


def weighted_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reduction: str = "token",
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` ``(B, T, V)`` against ``labels`` ``(B, T)``.

    Args:
        logits: LLM output, one row per padded sample or packed row.
        labels: the input ids where a token is trained, ``IGNORE_INDEX`` elsewhere; shifted
            here (position ``t`` predicts label ``t + 1``), as ``transformers`` does.
        reduction: ``"token"``, ``"square"`` or ``"sample"`` (module docstring).
        sample_ids: ``(B, T)`` sample index per position (`sample_ids_of`); default: rows.

    Example:
        >>> logits = torch.zeros(2, 4, 5)
        >>> labels = torch.tensor([[-100, 1, 2, 3], [-100, 4, -100, -100]])
        >>> float(weighted_lm_loss(logits, labels, "sample"))  # log(5) for every token
        1.6094...
    """
    check_reduction(reduction)
    token_loss, trained = _token_losses(logits, labels)
    if not bool(trained.any()):
        return token_loss.sum() * 0.0  # keeps the graph: a batch with no labels adds nothing
    power = REDUCTIONS[reduction]
    if power == 0.0:
        return token_loss[trained].mean()
    per_sample, counts = _per_sample(token_loss, trained, sample_ids_of(labels, sample_ids))
    per_sample, counts = per_sample[counts > 0], counts[counts > 0]
    weights = counts.pow(-power)
    return (weights * per_sample).sum() / (weights * counts).sum()


def sample_losses(
    logits: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and trained-token count of every sample.

    Returns:
        ``(N,)`` loss sums and ``(N,)`` counts, sample ``i`` at index ``i`` (rows of a padded
        batch, else the ``sample_ids``); a sample without trained tokens has count 0.
    """
    token_loss, trained = _token_losses(logits, labels)
    return _per_sample(token_loss.detach(), trained, sample_ids_of(labels, sample_ids))


def _token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    target = labels[:, 1:]  # (B, T-1): position t predicts label t + 1
    token_loss = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, T-1)
    return token_loss, target != IGNORE_INDEX


def _per_sample(
    token_loss: torch.Tensor, trained: torch.Tensor, sample_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = sample_ids[:, 1:][trained]  # the sample of each trained token
    n = int(sample_ids.max()) + 1 if sample_ids.numel() else 0
    counts = torch.bincount(ids, minlength=n).to(token_loss.dtype)
    sums = torch.zeros_like(counts).index_add_(0, ids, token_loss[trained])
    return sums, counts
