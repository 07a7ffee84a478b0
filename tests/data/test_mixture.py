from __future__ import annotations

from collections import Counter

import pytest

from groundinggpt.data.mixture import MixtureSampler


def _owner(index: int, offsets: list[int]) -> int:
    return max(i for i, off in enumerate(offsets) if index >= off)


def test_weights_and_replay_share():
    sampler = MixtureSampler([100, 50, 300, 100], [1.0, 2.0, None, None], replay_ratio=0.2, seed=3)
    idx = list(sampler)
    counts = Counter(_owner(i, sampler.offsets) for i in idx)
    assert counts[0] == 100 and counts[1] == 100  # weight 2 = every sample twice
    assert counts[2] + counts[3] == 50  # 0.2 of the epoch: 50 / (200 + 50)
    assert len(idx) == len(sampler) == 250
    # a weight-1 dataset is seen exactly once per epoch, a weight-2 one exactly twice
    assert sorted(i for i in idx if i < 100) == list(range(100))
    assert Counter(i for i in idx if 100 <= i < 150) == dict.fromkeys(range(100, 150), 2)


def test_replay_follows_pool_sizes_over_many_epochs():
    sampler = MixtureSampler([10, 300, 100], [1.0, None, None], replay_ratio=0.5, seed=0)
    counts = Counter()
    for epoch in range(200):
        sampler.set_epoch(epoch)
        counts.update(_owner(i, sampler.offsets) for i in sampler)
    share = counts[1] / (counts[1] + counts[2])
    assert share == pytest.approx(0.75, abs=0.03)


def test_deterministic_per_epoch_and_reshuffled_across_epochs():
    a = MixtureSampler([40, 20], [1.0, None], replay_ratio=0.1, seed=7)
    b = MixtureSampler([40, 20], [1.0, None], replay_ratio=0.1, seed=7)
    assert list(a.indices(0)) == list(b.indices(0))
    assert list(a.indices(0)) != list(a.indices(1))


def test_zero_ratio_turns_replay_off_and_bad_ratio_fails():
    sampler = MixtureSampler([10, 10], [1.0, None], replay_ratio=0.0)
    assert all(i < 10 for i in sampler)
    with pytest.raises(ValueError, match="replay_ratio"):
        MixtureSampler([10], [1.0], replay_ratio=1.0)
