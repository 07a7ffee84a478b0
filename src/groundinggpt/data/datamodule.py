"""LightningDataModule: the stage's training mixture (with replay) and the grounding eval splits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import ConcatDataset, DataLoader

from groundinggpt.data.conversation import ConversationFormatter
from groundinggpt.data.dataset import ConversationDataset, GroundingCollator, resolve_media_roots
from groundinggpt.data.mixture import EpochPosition, MixtureSampler, plan_stage
from groundinggpt.data.records import SampleError
from groundinggpt.data.segmentation import record_first_mask
from groundinggpt.modalities import modality_specs

log = logging.getLogger(__name__)


class GroundingDataModule(L.LightningDataModule):
    """Datasets of one training stage.

    Args:
        tokenizer: the model's tokenizer (with the special tokens already added).
        root: folder that annotation files and media paths are relative to.
        catalog: ``{name: {file, task, media_root?}}``: every dataset this data config knows;
            ``file`` is relative to ``root``; ``media_root`` (a folder, or one per modality)
            overrides the module's ``media_root`` for that dataset.
        stages: ``{stage: {name: weight}}`` training mixtures, in stage order.
        train_stage: the stage to train; it replays the datasets of every earlier stage
            (`plan_stage`). Named apart from Lightning's ``setup(stage)`` (fit/validate/test).
        replay_ratio: share of each training epoch drawn from earlier stages (0 turns it off).
        val, test: names of the evaluation datasets.
        processors: ``{"image": ImageProcessor, "video": ..., "audio": ...}``.
        media_tokens: tokens per media item per modality (the model's ``media_tokens``).
        synthetic: kwargs of :func:`ensure_synthetic`; when given, ``root`` is generated first.
        system: system prompt of the conversation template.
        media_after_text: media blocks after the text of a turn (`ConversationFormatter`).
        media_root: where media paths of records are relative to: one folder, or
            ``{"image": ..., "video": ..., "audio": ...}``; default ``root``.
        check_grounding: skip records with malformed boxes/spans (see ``validation``).
        allow_absolute_media_paths: accept media paths that leave their media root (absolute
            paths, ``../``, symlinks out); by default such a sample is skipped as
            ``path_outside_root``.
        pack_length: pack each training batch's samples into rows of at most this many
            tokens (position ids restart per sample, no attention across samples: see
            `groundinggpt.data.packing`); at least ``max_length``. ``None`` pads instead.
        group_by_length: draw training batches of similar lengths (mega-batches of
            ``group_steps`` steps sorted by length, steps shuffled): less padding without
            packing. Both keep mid-epoch resume exact.

    Resuming: `state_dict` records how many samples of the current epoch the training loop
    has consumed (all ranks together); a run resumed from that checkpoint starts its
    sampler right after them, so it trains on exactly the samples not yet seen.

    Example:
        >>> dm = GroundingDataModule(tok, root, catalog={"rec": {"file": "rec.json", "task": "rec"}},
        ...                          stages={"stage2_fine": {"rec": 1.0}}, train_stage="stage2_fine", ...)
    """

    def __init__(
        self,
        tokenizer,
        root: str,
        catalog: Mapping[str, Mapping[str, Any]],
        stages: Mapping[str, Mapping[str, float]],
        train_stage: str,
        val: list[str],
        processors: Mapping[str, Callable],
        media_tokens: Mapping[str, int],
        test: list[str] | None = None,
        replay_ratio: float = 0.0,
        max_length: int = 2048,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        on_error: str = "skip",
        system: str = "",
        media_after_text: bool = False,
        synthetic: Mapping[str, Any] | None = None,
        media_root: str | Mapping[str, str] | None = None,
        check_grounding: bool = True,
        allow_absolute_media_paths: bool = False,
        pack_length: int | None = None,
        group_by_length: bool = False,
        group_steps: int = 64,
    ) -> None:
        super().__init__()
        if pack_length is not None and pack_length < max_length:
            raise ValueError(
                f"pack_length {pack_length} < max_length {max_length}: a sample of max_length "
                "tokens must fit one packed row"
            )
        self.tokenizer = tokenizer
        self.root = Path(root)
        self.plan = plan_stage(stages, train_stage, catalog, val, test or [], replay_ratio)
        self.weights, self.splits = self.plan.weights, self.plan.splits
        self.catalog = {k: dict(v) for k, v in catalog.items()}
        self.processors = dict(processors)
        self.formatter = ConversationFormatter(
            tokenizer, modality_specs(media_tokens), system, media_after_text
        )
        self.media_roots = resolve_media_roots(
            media_root if media_root is not None else self.root, self.formatter.specs
        )
        self.collate = GroundingCollator(tokenizer.pad_token_id)
        self.train_collate = GroundingCollator(tokenizer.pad_token_id, pack_length)
        self.group_by_length, self.group_steps = bool(group_by_length), int(group_steps)
        self._lengths: list[int] | None = None
        self.replay_ratio = replay_ratio
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.on_error = on_error
        self.synthetic = dict(synthetic) if synthetic else None
        self.check_grounding = check_grounding
        self.allow_absolute_media_paths = allow_absolute_media_paths
        self.datasets: dict[str, dict[str, ConversationDataset]] = {}
        self.position = EpochPosition()

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from groundinggpt.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, **self.synthetic)

    def _dataset(self, name: str, spec: Mapping[str, Any]) -> ConversationDataset:
        return ConversationDataset(
            self.root / spec["file"],
            resolve_media_roots(self.media_roots, self.formatter.specs, spec.get("media_root")),
            self.formatter,
            self.processors,
            self.max_length,
            task=spec.get("task"),
            name=name,
            on_error=self.on_error,
            check_grounding=self.check_grounding,
            allow_absolute_media_paths=self.allow_absolute_media_paths,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.prepare_data()  # no-op when cached; makes setup() usable outside a Trainer
        for split, names in self.splits.items():
            self.datasets[split] = {n: self._dataset(n, self.catalog[n]) for n in names}
        sizes = {s: sum(len(d) for d in ds.values()) for s, ds in self.datasets.items()}
        log.info("dataset sizes per split: %s", sizes)

    def _loader(self, split: str, **kwargs) -> DataLoader:
        return DataLoader(
            ConcatDataset(list(self.datasets[split].values())),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_sampler(self) -> MixtureSampler:
        """This rank's sampler over the stage mixture, started where a resumed run left off."""
        trainer = self._trainer_or_none()
        sampler = self._mixture(
            num_replicas=trainer.world_size if trainer else None,
            rank=trainer.global_rank if trainer else None,
        )
        self.position.start(sampler)
        return sampler

    def _mixture(self, num_replicas: int | None = 1, rank: int | None = 0) -> MixtureSampler:
        main, replay = self.datasets["train"], self.datasets["replay"]
        return MixtureSampler(
            [len(d) for d in main.values()] + [len(d) for d in replay.values()],
            [self.weights[n] for n in main] + [None] * len(replay),
            replay_ratio=self.replay_ratio,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
            lengths=self.train_lengths() if self.group_by_length else None,
            batch_size=self.batch_size,
            group_steps=self.group_steps,
        )

    def train_lengths(self) -> list[int]:
        """Token length of every training sample (main, then replay), computed once."""
        if self._lengths is None:
            datasets = [*self.datasets["train"].values(), *self.datasets["replay"].values()]
            start = time.perf_counter()
            self._lengths = [ds.length(i) for ds in datasets for i in range(len(ds))]
            log.info(
                "lengths of %d training samples for length grouping in %.1f s",
                len(self._lengths),
                time.perf_counter() - start,
            )
        return self._lengths

    def _trainer_or_none(self):
        # LightningDataModule.trainer is None outside a Trainer (and in plain unit tests).
        return getattr(self, "trainer", None)

    def state_dict(self) -> dict[str, Any]:
        """Position in the current epoch: samples the training loop has consumed, all ranks."""
        trainer = self._trainer_or_none()
        if trainer is None or not self.datasets.get("train"):
            return {}
        return EpochPosition.state(trainer, self.batch_size, self._mixture().total_size, self.seed)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.position.load(state_dict)

    def read_cached_features(self, caches: Mapping[str, Any]) -> None:
        """Training samples read the frozen encoders' features from ``caches`` (``{modality:
        FeatureCache}``) where they hold the file, instead of decoding it: the DataLoader
        workers then neither decode nor compete with the training step for the CPU
        (`RecordEncoder.read_cached_features`). Call before the training loader is built."""
        for ds in [*self.datasets["train"].values(), *self.datasets["replay"].values()]:
            ds.encoder.read_cached_features(caches)

    def train_dataloader(self) -> DataLoader:
        main, replay = self.datasets["train"], self.datasets["replay"]
        ds = ConcatDataset(list(main.values()) + list(replay.values()))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=self.train_sampler(),
            collate_fn=self.train_collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader | list:
        # No validation sets (real data is evaluated on benchmarks by eval.py): no batches.
        if not self.datasets["val"]:
            return []
        return self._loader("val", batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        if not self.datasets["test"]:
            return []
        return self._loader("test", batch_size=self.eval_batch_size, shuffle=False)

    def first_masks(self, split: str, tasks: Sequence[str]) -> dict[str, list]:
        """The first target mask (original pixels) of every record of ``tasks`` in ``split``."""
        out: dict[str, list] = {}
        for ds in self.datasets.get(split, {}).values():
            for i in range(len(ds)):
                try:
                    rec = ds.records[i]
                except SampleError:
                    continue
                task = ds.task_of(rec)
                mask = record_first_mask(rec) if task in tasks else None
                if mask is not None:
                    out.setdefault(task, []).append(mask)
        return out

    def references(self, split: str) -> dict[str, list[str]]:
        """First answers of every record of ``split``, grouped by task (for baselines)."""
        out: dict[str, list[str]] = {}
        for ds in self.datasets.get(split, {}).values():
            for i in range(len(ds)):
                try:
                    rec = ds.records[i]
                    out.setdefault(ds.task_of(rec), []).append(rec["conversations"][1]["value"])
                except (SampleError, KeyError, IndexError, TypeError):
                    continue  # a bad record is counted when training reads it
        return out
