"""Row packing and length grouping: every sample once, rows within capacity, resumable order."""

from __future__ import annotations

import random

import pytest
import torch

from groundinggpt.data.mixture import MixtureSampler
from groundinggpt.data.packing import group_by_length, pack_rows, packed_positions


@pytest.mark.parametrize("seed", range(20))
def test_pack_rows_places_every_sample_once_within_capacity(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 50))]
    capacity = rng.randint(60, 200)
    rows = pack_rows(lengths, capacity)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
    assert all(row == sorted(row) for row in rows)
    assert len(rows) <= len(lengths)


def test_pack_rows_fills_rows_evenly() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(20, 120) for _ in range(64)]
    rows = pack_rows(lengths, 512)
    widest = max(sum(lengths[i] for i in row) for row in rows)
    assert 1 - sum(lengths) / (len(rows) * widest) < 0.05  # padding share of the batch


def test_pack_rows_refuses_a_sample_longer_than_a_row() -> None:
    with pytest.raises(ValueError, match="does not fit pack_length 8"):
        pack_rows([3, 9], 8)


def test_packed_positions_restart_per_sample_and_for_the_padding() -> None:
    assert packed_positions([3, 2], 7).tolist() == [0, 1, 2, 0, 1, 0, 1]


def test_group_by_length_is_a_permutation_with_sorted_steps() -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 100, (103,))
    order = torch.randperm(103, generator=gen)
    grouped = group_by_length(order, lengths, step_size=4, group_steps=5, generator=gen)
    assert sorted(grouped.tolist()) == sorted(order.tolist())
    steps = grouped[:100].view(-1, 4)
    # each full step comes from one sorted mega-batch: its lengths are non-increasing
    assert all((lengths[s][:-1] >= lengths[s][1:]).all() for s in steps)

    def spread(idx):
        return lengths[idx].view(-1, 4).amax(1) - lengths[idx].view(-1, 4).amin(1)

    assert spread(grouped[:100]).float().mean() < spread(order[:100]).float().mean() / 2


def test_grouped_sampler_is_deterministic_and_shards_each_step_across_ranks() -> None:
    lengths = list(range(60))
    kwargs = {"lengths": lengths, "batch_size": 3, "group_steps": 4, "seed": 1}
    ranks = [MixtureSampler([40, 20], [1.0, 1.0], num_replicas=2, rank=r, **kwargs) for r in (0, 1)]
    a, b = (s.rank_indices(0).tolist() for s in ranks)
    assert sorted(a + b) == list(range(60))
    again = MixtureSampler([40, 20], [1.0, 1.0], num_replicas=2, rank=0, **kwargs)
    assert again.rank_indices(0).tolist() == a

    # rank 0's step k and rank 1's step k are one run of a sorted mega-batch: similar lengths
    def spread(x: list[int], y: list[int]) -> float:
        steps = [x[3 * k : 3 * k + 3] + y[3 * k : 3 * k + 3] for k in range(len(x) // 3)]
        return sum(max(s) - min(s) for s in steps) / len(steps)

    plain = [MixtureSampler([40, 20], [1.0, 1.0], num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    assert spread(a, b) < spread(*(s.rank_indices(0).tolist() for s in plain)) / 2
    with pytest.raises(ValueError, match="59 lengths for 60 samples"):
        MixtureSampler([40, 20], [1.0, 1.0], lengths=lengths[:-1])
