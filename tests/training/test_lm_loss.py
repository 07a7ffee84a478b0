"""The batch loss reductions: token mean, sample mean, square weights; packed == padded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from groundinggpt.data.conversation import IGNORE_INDEX as X
from groundinggpt.training.lm_loss import sample_losses, weighted_lm_loss

V = 7


def _per_token(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Losses of the trained positions of one sample, computed one sample at a time."""
    y = torch.tensor(labels)
    losses = F.cross_entropy(logits[:-1], y[1:], ignore_index=X, reduction="none")
    return losses[y[1:] != X]


@pytest.fixture
def samples():
    torch.manual_seed(0)
    labels = [[X, X, 3, 4, 5, 6, 1], [X, X, X, 2], [X, 5, 5, 5, 5, 5, 5, 5, 5]]
    return [(torch.randn(len(y), V), y) for y in labels]


def _padded(samples):
    width = max(len(y) for _, y in samples)
    logits = torch.zeros(len(samples), width, V)
    labels = torch.full((len(samples), width), X)
    for i, (lg, y) in enumerate(samples):
        logits[i, : len(y)] = lg
        labels[i, : len(y)] = torch.tensor(y)
    return logits, labels


def _packed(samples):
    """All samples end to end in one row, then 2 padding positions."""
    logits = torch.cat([lg for lg, _ in samples] + [torch.zeros(2, V)])[None]
    labels = torch.tensor([v for _, y in samples for v in y] + [X, X])[None]
    ids = torch.tensor([i for i, (_, y) in enumerate(samples) for _ in y] + [-1, -1])[None]
    return logits, labels, ids


def test_each_reduction_weights_samples_as_documented(samples) -> None:
    losses = [_per_token(lg, y) for lg, y in samples]
    logits, labels = _padded(samples)
    everything = torch.cat(losses)
    torch.testing.assert_close(weighted_lm_loss(logits, labels, "token"), everything.mean())
    per_sample = torch.stack([x.mean() for x in losses])
    torch.testing.assert_close(weighted_lm_loss(logits, labels, "sample"), per_sample.mean())
    w = torch.tensor([1 / math.sqrt(len(x)) for x in losses])
    square = sum(wi * x.sum() for wi, x in zip(w, losses, strict=True)) / sum(
        wi * len(x) for wi, x in zip(w, losses, strict=True)
    )
    torch.testing.assert_close(weighted_lm_loss(logits, labels, "square"), square)
    # the short answer (one token) weighs more under "sample" than under "token"
    assert not torch.isclose(per_sample.mean(), everything.mean())


@pytest.mark.parametrize("reduction", ["token", "square", "sample"])
def test_packed_rows_give_the_padded_loss(samples, reduction) -> None:
    padded = weighted_lm_loss(*_padded(samples), reduction)
    logits, labels, ids = _packed(samples)
    torch.testing.assert_close(weighted_lm_loss(logits, labels, reduction, ids), padded)


def test_token_reduction_is_the_transformers_loss(samples) -> None:
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits, labels = _padded(samples)
    hf = ForCausalLMLoss(logits, labels, vocab_size=V)
    torch.testing.assert_close(weighted_lm_loss(logits, labels, "token"), hf)


def test_unknown_reduction_and_empty_labels() -> None:
    with pytest.raises(ValueError, match="loss_reduction"):
        weighted_lm_loss(torch.zeros(1, 3, V), torch.full((1, 3), X), "mean")
    logits = torch.zeros(1, 3, V, requires_grad=True)
    loss = weighted_lm_loss(logits, torch.full((1, 3), X), "sample")
    assert float(loss.detach()) == 0.0
    loss.backward()  # still differentiable: a batch without labels adds nothing


def test_sample_losses_are_each_samples_own_sum_and_count(samples) -> None:
    """What `val/<task>/loss` is built from: one sum and one count per sample, padded or packed."""
    losses = [_per_token(lg, y) for lg, y in samples]
    want_sums = torch.stack([x.sum() for x in losses])
    want_counts = torch.tensor([float(len(x)) for x in losses])
    for sums, counts in (sample_losses(*_padded(samples)), sample_losses(*_packed(samples))):
        torch.testing.assert_close(sums, want_sums)
        torch.testing.assert_close(counts, want_counts)
    # a row without trained tokens keeps its place, with count 0
    logits, labels = _padded(samples)
    labels[1] = X
    sums, counts = sample_losses(logits, labels)
    assert counts.tolist() == [want_counts[0].item(), 0.0, want_counts[2].item()]
    assert sums[1] == 0.0
