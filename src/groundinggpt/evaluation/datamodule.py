"""Benchmark samples -> batches for evaluation, sharded over ranks without padding.

Every sample reaches the model exactly once across all ranks (no duplicates from distributed
padding), and a batch holds the same samples whatever the number of ranks, so a run on N
processes generates token for token what one process generates.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from groundinggpt.data.conversation import ConversationFormatter
from groundinggpt.data.dataset import GroundingCollator, RecordEncoder
from groundinggpt.data.segmentation import SegmentationProcessor
from groundinggpt.evaluation.benchmarks import (
    BENCHMARK_TASKS,
    BenchmarkSample,
    complete_meta,
    load_benchmark,
)
from groundinggpt.evaluation.sample import MASK_TASKS
from groundinggpt.modalities import modality_specs

log = logging.getLogger(__name__)

# Errors of one bad record or media file: skipped and counted, never fatal (data policy).
SKIP_ERRORS = (ValueError, KeyError, TypeError, OSError)


@dataclass
class Skipped:
    """A sample that could not be turned into model inputs, kept so that it scores as a miss.

    Args:
        index: position of the sample in the benchmark file.
        sample: the benchmark sample (its meta may be incomplete).
        kind: the error's category (``MediaError.kind`` such as ``missing_file``, else the
            exception's class name), the key of the skip counts.
        reason: the full message.
    """

    index: int
    sample: BenchmarkSample
    kind: str
    reason: str


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


class BenchmarkDataset(Dataset):
    """Benchmark samples -> token ids and media tensors, one item per sample.

    Media metadata (image size, video duration) is completed here, inside the DataLoader
    workers, so that reading a benchmark stays cheap. A sample that fails (missing or
    unreadable media, a record too long...) comes back as :class:`Skipped` with
    ``on_error="skip"`` and raises with ``on_error="raise"``.

    Args:
        samples: the benchmark's samples (``load_benchmark``).
        formatter: the conversation template of the model.
        processors: ``{"image": ImageProcessor, ...}``: path -> tensor per modality.
        max_length: longest allowed token sequence (prompt + reference answer).
        on_error: ``"skip"`` or ``"raise"``.
        positions: position of each sample in the benchmark file (default: list order);
            reported as ``index`` so that results can be put back in benchmark order.

    Example:
        >>> ds = BenchmarkDataset(load_benchmark("pope", ...), fmt, {"image": proc}, 2048)
        >>> ds[0]["prompt_ids"][:3]
    """

    def __init__(
        self,
        samples: Sequence[BenchmarkSample],
        formatter: ConversationFormatter,
        processors: Mapping[str, Callable],
        max_length: int,
        on_error: str = "skip",
        positions: Sequence[int] | None = None,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.samples = list(samples)
        self.positions = list(range(len(self.samples)) if positions is None else positions)
        if len(self.positions) != len(self.samples):
            raise ValueError("positions must have one entry per sample")
        self.formatter = formatter
        self.processors = dict(processors)
        self.max_length = max_length
        self.on_error = on_error
        # Benchmark media paths are absolute, so the root "/" leaves them as they are.
        self.encode = RecordEncoder(
            formatter, self.processors, max_length, dict.fromkeys(formatter.specs, Path("/"))
        )

    def __len__(self) -> int:
        return len(self.samples)

    def _build(self, sample: BenchmarkSample) -> dict[str, Any]:
        sample = complete_meta(sample)
        item = self.encode(sample.to_record(), sample.task, dataset=sample.id)
        item["sample"] = sample
        return item

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        sample = self.samples[index]
        try:
            item = self._build(sample)
        except SKIP_ERRORS as err:
            if self.on_error == "raise":
                raise
            cause = _root_cause(err)
            log.warning("skipping benchmark sample %s: %s", sample.id, err)
            kind = getattr(cause, "kind", None) or type(cause).__name__
            return Skipped(self.positions[index], sample, kind, str(err))
        item["index"] = self.positions[index]
        return item


class BenchmarkCollator:
    """Batch benchmark items: :class:`GroundingCollator` plus the samples and the skipped ones.

    Adds ``samples`` and ``index`` (aligned with the batch rows) and ``skipped_samples``
    (:class:`Skipped` items, not in the batch rows) to the batch.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.collate = GroundingCollator(pad_token_id)

    def __call__(self, items: Sequence[dict[str, Any] | Skipped]) -> dict[str, Any]:
        skipped = [it for it in items if isinstance(it, Skipped)]
        kept = [it for it in items if not isinstance(it, Skipped)]
        batch = self.collate(kept)
        batch["skipped"] = [s.kind for s in skipped]
        batch["skipped_samples"] = skipped
        batch["samples"] = [it["sample"] for it in kept]
        batch["index"] = [it["index"] for it in kept]
        return batch


class ShardedBatchSampler(Sampler[list[int]]):
    """Fixed batches of consecutive indices, dealt round-robin to the ranks.

    Batch ``b`` holds indices ``[b * B, (b + 1) * B)`` on every world size and goes to rank
    ``b % world_size``. No index is repeated; ranks with fewer batches get empty ones at the
    end so that every rank runs the same number of steps (the collectives at epoch end then
    line up) without counting any sample twice.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch.
        rank: this process's rank.
        world_size: number of processes.

    Example:
        >>> list(ShardedBatchSampler(5, 2, rank=1, world_size=2))
        [[2, 3], []]
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad sharding: batch_size={batch_size}, rank {rank}/{world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.num_samples / self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        n_batches = math.ceil(self.num_samples / self.batch_size)
        mine = range(self.rank, n_batches, self.world_size)
        for b in mine:
            yield list(range(b * self.batch_size, min((b + 1) * self.batch_size, self.num_samples)))
        for _ in range(len(self) - len(mine)):
            yield []


def _loader_kwargs(benchmark: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a ``configs/benchmark`` entry that :func:`load_benchmark` takes."""
    accepted = inspect.signature(load_benchmark).parameters
    return {k: v for k, v in benchmark.items() if k in accepted}


class BenchmarkDataModule(L.LightningDataModule):
    """One benchmark as the ``test`` (and ``predict``) split.

    Samples are read with :func:`load_benchmark` in ``setup`` and ordered by modality and
    question length, so that a batch shares its media kinds and wastes little left padding;
    predictions are written back in benchmark order.

    Args:
        tokenizer: the model's tokenizer (with the special tokens).
        benchmark: a ``configs/benchmark`` entry: ``name``, ``annotation_file``, ``media_dir``
            (+ ``audio_dir``, ``split``, ``prompt``, ``limit``); other keys are ignored here.
        processors: ``{"image": ImageProcessor, ...}``, the same as in training.
        media_tokens: patch tokens per modality (the model's ``media_tokens``).
        system: system prompt of the conversation template (as in training).
        media_after_text: media blocks after the text of a turn (as in training).
        max_length: longest allowed token sequence.
        batch_size: samples per generation batch.
        num_workers: DataLoader workers.
        on_error: ``"skip"`` (count and score as a miss) or ``"raise"``.
        segment_size: SAM's input side for the mask benchmarks (``eval.py`` passes the
            model's ``pixel_decoder.image_size``); it replaces any ``segment`` processor of
            ``processors`` with a `SegmentationProcessor` of that size that keeps empty targets. None: no masks.

    Example:
        >>> dm = BenchmarkDataModule(tok, {"name": "pope", "annotation_file": f, "media_dir": d},
        ...                          {"image": ImageProcessor(64)}, {"image": 64})
    """

    def __init__(
        self,
        tokenizer,
        benchmark: Mapping[str, Any],
        processors: Mapping[str, Callable],
        media_tokens: Mapping[str, int],
        system: str = "",
        media_after_text: bool = False,
        max_length: int = 2048,
        batch_size: int = 16,
        num_workers: int = 0,
        on_error: str = "skip",
        segment_size: int | None = None,
    ) -> None:
        super().__init__()
        self.benchmark = dict(benchmark)
        self.processors = dict(processors)
        if segment_size is not None:
            self.processors["segment"] = SegmentationProcessor(segment_size, allow_empty=True)
        self.formatter = ConversationFormatter(
            tokenizer, modality_specs(media_tokens), system, media_after_text
        )
        self.collate = BenchmarkCollator(tokenizer.pad_token_id)
        self.max_length = max_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.on_error = on_error
        self.dataset: BenchmarkDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        name = self.benchmark.get("name")
        if BENCHMARK_TASKS.get(name) in MASK_TASKS and "segment" not in self.processors:
            raise ValueError(
                f"benchmark {name} scores masks: it needs a model with a pixel decoder "
                "(e.g. model=tiny_seg), whose SAM input size sets the `segment` processor"
            )
        samples = load_benchmark(**_loader_kwargs(self.benchmark))
        ids = [s.id for s in samples]
        if len(set(ids)) != len(ids):
            raise ValueError(f"benchmark {self.benchmark.get('name')} has duplicate sample ids")
        order = sorted(
            range(len(samples)), key=lambda i: (sorted(samples[i].media), len(samples[i].question))
        )
        self.dataset = BenchmarkDataset(
            [samples[i] for i in order],
            self.formatter,
            self.processors,
            self.max_length,
            self.on_error,
            positions=order,
        )
        log.info("benchmark %s: %d samples", self.benchmark.get("name"), len(samples))

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self) -> DataLoader:
        if self.dataset is None:
            self.setup()
        rank, world = self._rank_world()
        return DataLoader(
            self.dataset,
            batch_sampler=ShardedBatchSampler(len(self.dataset), self.batch_size, rank, world),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            # Workers decode media; one torch thread each keeps them off the model's cores.
            worker_init_fn=_one_thread if self.num_workers else None,
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)
