"""LightningDataModule: the stage's training mixture (with replay) and the grounding eval splits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import ConcatDataset, DataLoader

from groundinggpt.data.conversation import ConversationFormatter, modality_specs
from groundinggpt.data.dataset import ConversationDataset, GroundingCollator
from groundinggpt.data.mixture import MixtureSampler

log = logging.getLogger(__name__)


class GroundingDataModule(L.LightningDataModule):
    """Datasets of one training stage.

    Args:
        tokenizer: the model's tokenizer (with the special tokens already added).
        root: folder that annotation files and media paths are relative to.
        catalog: ``{name: {file, task}}``: every dataset this data config knows.
        stages: ``{stage: {name: weight}}`` training mixtures, in stage order.
        stage: the stage to train; it replays the datasets of every earlier stage.
        replay_ratio: share of each training epoch drawn from earlier stages (0 turns it off).
        val, test: names of the evaluation datasets.
        processors: ``{"image": ImageProcessor, "video": ..., "audio": ...}``.
        media_tokens: patch tokens per media item per modality (the adapters' output lengths).
        synthetic: kwargs of :func:`ensure_synthetic`; when given, ``root`` is generated first.
        system: system prompt of the conversation template.

    Example:
        >>> dm = GroundingDataModule(tok, root, catalog={"rec": {"file": "rec.json", "task": "rec"}},
        ...                          stages={"stage2_fine": {"rec": 1.0}}, stage="stage2_fine", ...)
    """

    def __init__(
        self,
        tokenizer,
        root: str,
        catalog: Mapping[str, Mapping[str, Any]],
        stages: Mapping[str, Mapping[str, float]],
        stage: str,
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
        synthetic: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.root = Path(root)
        if stage not in stages:
            raise ValueError(f"stage {stage!r} has no mixture; data config has {list(stages)}")
        order = list(stages)
        self.weights = {n: float(w) for n, w in stages[stage].items()}
        earlier = [n for s in order[: order.index(stage)] for n in stages[s]]
        replay = [n for n in dict.fromkeys(earlier) if n not in self.weights]
        self.splits = {
            "train": list(self.weights),
            "replay": replay,
            "val": list(val),
            "test": list(test or []),
        }
        unknown = {n for names in self.splits.values() for n in names} - set(catalog)
        if unknown:
            raise ValueError(f"datasets {sorted(unknown)} are not in the data catalog")
        self.catalog = {k: dict(v) for k, v in catalog.items()}
        self.processors = dict(processors)
        self.formatter = ConversationFormatter(tokenizer, modality_specs(media_tokens), system)
        self.collate = GroundingCollator(tokenizer.pad_token_id)
        self.replay_ratio = replay_ratio
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.on_error = on_error
        self.synthetic = dict(synthetic) if synthetic else None
        self.datasets: dict[str, dict[str, ConversationDataset]] = {}

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            from groundinggpt.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, **self.synthetic)

    def _dataset(self, name: str, spec: Mapping[str, Any]) -> ConversationDataset:
        return ConversationDataset(
            self.root / spec["file"],
            self.root,
            self.formatter,
            self.processors,
            self.max_length,
            task=spec.get("task"),
            name=name,
            on_error=self.on_error,
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
        main, replay = self.datasets["train"], self.datasets["replay"]
        weights = [self.weights[n] for n in main]
        return MixtureSampler(
            [len(d) for d in main.values()] + [len(d) for d in replay.values()],
            weights + [None] * len(replay),
            replay_ratio=self.replay_ratio,
            seed=self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        main, replay = self.datasets["train"], self.datasets["replay"]
        ds = ConcatDataset(list(main.values()) + list(replay.values()))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=self.train_sampler(),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", batch_size=self.eval_batch_size, shuffle=False)

    def references(self, split: str) -> dict[str, list[str]]:
        """First answers of every record of ``split``, grouped by task (for baselines)."""
        out: dict[str, list[str]] = {}
        for ds in self.datasets.get(split, {}).values():
            for i, rec in enumerate(ds.records):
                out.setdefault(ds.task_of(rec), []).append(ds.reference(i))
        return out
