"""Stage mixtures: weighted datasets of this stage plus a replay share of earlier stages."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _draw(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``range(size)``: whole shuffled passes, then a partial one."""
    if size == 0 or n == 0:
        return torch.empty(0, dtype=torch.long)
    full, rest = divmod(n, size)
    parts = [torch.randperm(size, generator=gen) for _ in range(full)]
    parts.append(torch.randperm(size, generator=gen)[:rest])
    return torch.cat(parts)


class MixtureSampler(Sampler[int]):
    """Indices into a ``ConcatDataset`` of ``sizes`` datasets, one epoch at a time.

    A main dataset ``i`` contributes ``round(weights[i] * sizes[i])`` samples per epoch
    (weight 2 = every sample twice, 0.5 = a random half). Replay datasets share
    ``replay_ratio`` of the whole epoch, drawn in proportion to their sizes. The order is a
    deterministic function of ``seed`` and the epoch number.

    Args:
        sizes: lengths of the datasets in ConcatDataset order.
        weights: per dataset multiplier; ``None`` marks a replay dataset.
        replay_ratio: the share of the epoch taken by replay datasets, in [0, 1).
        seed: base seed.

    Example:
        >>> s = MixtureSampler([100, 50, 400], [1.0, 2.0, None], replay_ratio=0.1)
        >>> len(s)  # 200 main samples + 22 replayed
        222
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float | None],
        replay_ratio: float = 0.0,
        seed: int = 0,
    ) -> None:
        if len(sizes) != len(weights):
            raise ValueError("sizes and weights must have the same length")
        if not 0.0 <= replay_ratio < 1.0:
            raise ValueError(f"replay_ratio must be in [0, 1), got {replay_ratio}")
        self.sizes = list(sizes)
        self.weights = list(weights)
        self.replay_ratio = replay_ratio
        self.seed = seed
        self.epoch = 0
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        main = [
            (i, round(w * s))
            for i, (s, w) in enumerate(zip(sizes, weights, strict=True))
            if w is not None
        ]
        self.main_counts = dict(main)
        n_main = sum(n for _, n in main)
        replay = [i for i, w in enumerate(weights) if w is None]
        n_replay = round(replay_ratio / (1.0 - replay_ratio) * n_main) if replay else 0
        self.replay_ids = [i for i in replay if self.sizes[i] > 0]
        self.n_replay = n_replay if self.replay_ids else 0
        if n_main + self.n_replay == 0:
            raise ValueError("the training mixture is empty")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.main_counts.values()) + self.n_replay

    def indices(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        parts = [
            self.offsets[i] + _draw(n, self.sizes[i], gen) for i, n in self.main_counts.items()
        ]
        if self.n_replay:
            pool = torch.tensor([self.sizes[i] for i in self.replay_ids], dtype=torch.float)
            which = torch.multinomial(pool, self.n_replay, replacement=True, generator=gen)
            for j, i in enumerate(self.replay_ids):
                n = int((which == j).sum())
                parts.append(self.offsets[i] + _draw(n, self.sizes[i], gen))
        order = torch.cat(parts)
        return order[torch.randperm(len(order), generator=gen)]

    def __iter__(self) -> Iterator[int]:
        yield from self.indices(self.epoch).tolist()
        # Without an explicit set_epoch (e.g. a plain DataLoader) the next pass still reshuffles.
        self.epoch += 1
