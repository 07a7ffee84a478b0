"""Stage mixtures: which datasets a stage reads (`plan_stage`), how an epoch draws from them
(`MixtureSampler`: weighted datasets of this stage plus a replay share of earlier stages),
and where a resumed run starts in its epoch (`EpochPosition`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from groundinggpt.data.packing import group_by_length

log = logging.getLogger(__name__)


def _draw(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``range(size)``: whole shuffled passes, then a partial one."""
    if size == 0 or n == 0:
        return torch.empty(0, dtype=torch.long)
    full, rest = divmod(n, size)
    parts = [torch.randperm(size, generator=gen) for _ in range(full)]
    parts.append(torch.randperm(size, generator=gen)[:rest])
    return torch.cat(parts)


class MixtureSampler(DistributedSampler):
    """Indices into a ``ConcatDataset`` of ``sizes`` datasets, one epoch at a time, per rank.

    A main dataset ``i`` contributes ``round(weights[i] * sizes[i])`` samples per epoch
    (weight 2 = every sample twice, 0.5 = a random half). Replay datasets share
    ``replay_ratio`` of the whole epoch, drawn in proportion to their sizes. The epoch's
    order is a deterministic function of ``seed`` and the epoch number, the same on every rank.

    Distributed: rank ``r`` of ``W`` takes positions ``r, r + W, ...`` of the epoch order, so
    every drawn sample goes to exactly one rank; the last ``len % W`` positions (a random few,
    as the order is shuffled) are left out so that all ranks take the same number of steps.

    Resumable: `start_at` makes one epoch begin after the first ``consumed`` positions of its
    order. Because ranks interleave, "each of W ranks took c samples" is exactly "the first
    c * W positions are done", so a run may even resume with a different number of ranks.
    ``len()`` stays the full per-rank epoch length, which is what Lightning's restored loop
    counters expect.

    It subclasses `DistributedSampler` only so that Lightning leaves it in place under DDP
    instead of wrapping it in a sampler that would shard (and pad) it a second time.

    Args:
        sizes: lengths of the datasets in ConcatDataset order.
        weights: per dataset multiplier; ``None`` marks a replay dataset.
        replay_ratio: the share of the epoch taken by replay datasets, in [0, 1).
        seed: base seed.
        num_replicas: number of ranks (default: the process group's size, or 1).
        rank: this process's rank (default: the process group's rank, or 0).
        lengths: token length of every sample (ConcatDataset order) to group batches by
            length (`groundinggpt.data.packing.group_by_length`); ``None`` keeps them random.
        batch_size: samples per step per rank (needed with ``lengths``).
        group_steps: steps per length-sorted mega-batch.

    Example:
        >>> s = MixtureSampler([100, 50, 400], [1.0, 2.0, None], replay_ratio=0.1)
        >>> len(s)  # 200 main samples + 22 replayed
        222
        >>> len(MixtureSampler([100, 50, 400], [1.0, 2.0, None], 0.1, num_replicas=4, rank=1))
        55
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float | None],
        replay_ratio: float = 0.0,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
        group_steps: int = 64,
    ) -> None:
        if len(sizes) != len(weights):
            raise ValueError("sizes and weights must have the same length")
        if lengths is not None and len(lengths) != sum(sizes):
            raise ValueError(f"{len(lengths)} lengths for {sum(sizes)} samples")
        self.lengths = None if lengths is None else torch.as_tensor(list(lengths))
        self.batch_size, self.group_steps = int(batch_size), int(group_steps)
        if not 0.0 <= replay_ratio < 1.0:
            raise ValueError(f"replay_ratio must be in [0, 1), got {replay_ratio}")
        self.sizes = list(sizes)
        self.weights = list(weights)
        self.replay_ratio = replay_ratio
        self.seed = seed
        self.epoch = 0
        self.num_replicas, self.rank = _world(num_replicas, rank)
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
        self.total_size = n_main + self.n_replay
        if self.total_size < self.num_replicas:
            raise ValueError(
                f"the training mixture has {self.total_size} samples for {self.num_replicas} ranks"
            )
        self._resume: tuple[int, int] | None = None  # (epoch, consumed positions)
        # Attributes Lightning reads from a DistributedSampler.
        self.shuffle, self.drop_last, self.dataset = True, True, None
        self.num_samples = len(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, epoch: int, consumed: int) -> None:
        """Begin ``epoch`` after its first ``consumed`` positions (all ranks together)."""
        if not 0 <= consumed <= self.total_size:
            raise ValueError(f"consumed must be in [0, {self.total_size}], got {consumed}")
        self._resume = (epoch, consumed)

    def __len__(self) -> int:
        return self.total_size // self.num_replicas

    def indices(self, epoch: int) -> torch.Tensor:
        """The whole epoch's order (all ranks), ``(total_size,)``."""
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
        order = order[torch.randperm(len(order), generator=gen)]
        if self.lengths is None:
            return order
        step = self.batch_size * self.num_replicas  # rank r's batch k: one run of `step`
        return group_by_length(order, self.lengths, step, self.group_steps, gen)

    def rank_indices(self, epoch: int, consumed: int = 0) -> torch.Tensor:
        """This rank's share of ``epoch`` after the first ``consumed`` positions."""
        usable = len(self) * self.num_replicas  # drop the tail no rank can take evenly
        return self.indices(epoch)[consumed + self.rank : usable : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        consumed = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            consumed = self._resume[1]
            self._resume = None  # only the interrupted epoch starts late
        yield from self.rank_indices(self.epoch, consumed).tolist()
        # Without an explicit set_epoch (e.g. a plain DataLoader) the next pass still reshuffles.
        self.epoch += 1


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return int(num_replicas), int(rank)


@dataclass(frozen=True)
class StagePlan:
    """Which datasets a training stage reads: its own mixture, what it replays, what it scores.

    Attributes:
        weights: this stage's datasets -> epoch multiplier (only weights > 0).
        splits: ``{"train", "replay", "val", "test"}`` -> dataset names.
    """

    weights: dict[str, float]
    splits: dict[str, list[str]]


def plan_stage(
    stages: Mapping[str, Mapping[str, float]],
    train_stage: str,
    catalog: Mapping[str, Any],
    val: Sequence[str] = (),
    test: Sequence[str] = (),
    replay_ratio: float = 0.0,
) -> StagePlan:
    """The datasets of ``train_stage``: its weighted mixture, and as replay every dataset of
    the stages before it (in ``stages`` order) that it does not train itself.

    A weight of 0 leaves a dataset out (an experiment narrowing a merged mixture); a
    ``replay_ratio`` of 0 turns replay off.

    Raises:
        ValueError: an unknown stage, or a dataset that is not in ``catalog``.

    Example:
        >>> plan_stage({"s1": {"cap": 1}, "s2": {"rec": 1}}, "s2", {"cap": {}, "rec": {}},
        ...            replay_ratio=0.05).splits["replay"]
        ['cap']
    """
    if train_stage not in stages:
        raise ValueError(f"stage {train_stage!r} has no mixture; data config has {list(stages)}")
    order = list(stages)
    weights = {n: float(w) for n, w in stages[train_stage].items() if float(w) > 0}
    earlier = [n for s in order[: order.index(train_stage)] for n, w in stages[s].items() if w]
    replay = [n for n in dict.fromkeys(earlier) if n not in weights] if replay_ratio > 0 else []
    splits = {"train": list(weights), "replay": replay, "val": list(val), "test": list(test)}
    unknown = {n for names in splits.values() for n in names} - set(catalog)
    if unknown:
        raise ValueError(f"datasets {sorted(unknown)} are not in the data catalog")
    return StagePlan(weights, splits)


class EpochPosition:
    """Resume bookkeeping: how far the training loop got in its epoch, and starting there.

    `state` is what a checkpoint stores (samples consumed by all ranks together in the
    current epoch, the epoch's size and the seed); after `load`, `start` moves a fresh
    sampler right after those samples, so the resumed run trains on exactly the unseen ones.
    """

    def __init__(self) -> None:
        self.saved: dict[str, int] | None = None

    @staticmethod
    def state(trainer: Any, batch_size: int, total_size: int, seed: int) -> dict[str, int]:
        # `processed` counts batches that went through training_step, including the one whose
        # on_train_batch_end is saving this checkpoint; prefetched batches are not counted.
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {
            "epoch": int(trainer.current_epoch),
            "consumed": int(batches) * batch_size * int(trainer.world_size),
            "total_size": int(total_size),
            "seed": int(seed),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        if state:
            self.saved = {k: int(v) for k, v in state.items()}

    def start(self, sampler: MixtureSampler) -> None:
        """Start ``sampler`` where the loaded state left off (nothing without a state)."""
        if self.saved is None:
            return
        if self.saved.get("total_size") not in (None, sampler.total_size):
            log.warning(
                "the training mixture changed since the checkpoint (%s -> %d samples per "
                "epoch): the resumed epoch will not be exactly the remaining samples",
                self.saved["total_size"],
                sampler.total_size,
            )
        consumed = min(self.saved["consumed"], sampler.total_size)
        sampler.start_at(self.saved["epoch"], consumed)
        log.info("resuming epoch %d after %d samples", self.saved["epoch"], consumed)
