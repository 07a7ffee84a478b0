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


def test_ranks_partition_the_epoch():
    sizes, weights = [37, 20, 50], [1.0, 2.0, None]
    full = MixtureSampler(sizes, weights, replay_ratio=0.2, seed=5)
    order = full.indices(3).tolist()
    for world in (2, 3, 4):
        parts = [
            MixtureSampler(sizes, weights, 0.2, 5, num_replicas=world, rank=r) for r in range(world)
        ]
        for p in parts:
            p.set_epoch(3)
        seen = [list(p) for p in parts]
        assert all(len(s) == len(p) == len(seen[0]) for s, p in zip(seen, parts, strict=True))
        # together the ranks take the epoch order's first positions, each exactly once
        assert Counter(i for s in seen for i in s) == Counter(order[: len(seen[0]) * world])
        assert len(order) - len(seen[0]) * world < world  # only the uneven tail is left out


@pytest.mark.parametrize(("world", "new_world"), [(1, 1), (2, 2), (2, 3)])
def test_start_at_continues_with_exactly_the_unseen_samples(world, new_world):
    sizes, weights = [30, 25], [1.0, None]

    def sampler(w, r):
        s = MixtureSampler(sizes, weights, replay_ratio=0.3, seed=1, num_replicas=w, rank=r)
        s.set_epoch(2)
        return s

    per_rank = len(sampler(world, 0))
    before = [list(sampler(world, r))[:5] for r in range(world)]  # each rank took 5 samples
    after = []
    for r in range(new_world):
        s = sampler(new_world, r)
        s.start_at(epoch=2, consumed=5 * world)
        after.append(list(s))
        assert len(s) == len(sampler(new_world, r))  # len() is the full epoch (Lightning's view)
    done = Counter(i for part in before + after for i in part)
    assert sum(done.values()) == len(sampler(new_world, 0)) * new_world or new_world != world
    assert sum(done.values()) >= min(per_rank * world, len(sampler(new_world, 0)) * new_world)
    epoch = sampler(1, 0).indices(2).tolist()
    assert done == Counter(epoch[: sum(done.values())])
    # only the interrupted epoch starts late
    s = sampler(new_world, 0)
    s.start_at(epoch=1, consumed=10)
    assert list(s) == list(sampler(new_world, 0))


def test_observed_replay_share_matches_the_ratio():
    """One epoch of a realistic mixture: the replayed share is the configured ratio within
    the rounding of one sample, and replay datasets are drawn in proportion to their size
    (binomial sampling error)."""
    sizes, weights = [400, 300, 2000, 1000], [1.0, 1.0, None, None]
    for ratio in (0.05, 0.2, 0.5):
        s = MixtureSampler(sizes, weights, replay_ratio=ratio, seed=11)
        owners = Counter(_owner(i, s.offsets) for i in s)
        replayed = owners[2] + owners[3]
        assert replayed / len(s) == pytest.approx(ratio, abs=1 / len(s))
        p, n = 2000 / 3000, replayed
        assert abs(owners[2] - p * n) <= 4 * (n * p * (1 - p)) ** 0.5
