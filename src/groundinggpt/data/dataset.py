"""Datasets over records in the released GroundingGPT format, and their collator."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from groundinggpt.data.conversation import (
    IGNORE_INDEX,
    ConversationFormatter,
    count_placeholders,
    pad_sequences,
)
from groundinggpt.data.media import MediaError

log = logging.getLogger(__name__)


class SampleError(ValueError):
    """A record that cannot become a training sample (the message says which and why)."""


def read_records(path: str | Path) -> list[dict]:
    """Read a JSON list or a JSONL file of records."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ConversationDataset(Dataset):
    """Records -> token ids, labels and decoded media, one sample per record.

    Args:
        path: JSON list or JSONL of ``{"id", "image"|"video"|"sound", "conversations"}`` records,
            or the records themselves (a list of dicts, e.g. from a benchmark reader).
        media_root: folder the records' media paths are relative to.
        formatter: renders and tokenises the conversation.
        processors: ``{"image": ImageProcessor, ...}``: path -> tensor per modality.
        max_length: longest allowed token sequence.
        task: task name for records that carry none (``rec``, ``vtg``, ``caption``...).
        name: dataset name used in logs and counts (defaults to the file stem).
        on_error: ``"skip"`` returns ``None`` for a bad record (the collator counts it) or
            ``"raise"``.

    Example:
        >>> ds = ConversationDataset("annotations/rec_train.json", root, fmt, {"image": proc}, 512)
        >>> ds[0]["input_ids"][:5]
    """

    def __init__(
        self,
        path: str | Path | Sequence[Mapping[str, Any]],
        media_root: str | Path,
        formatter: ConversationFormatter,
        processors: Mapping[str, Callable[[Path], torch.Tensor]],
        max_length: int,
        task: str | None = None,
        name: str | None = None,
        on_error: str = "skip",
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if isinstance(path, (str, Path)):
            self.path, self.records = Path(path), read_records(path)
        else:
            self.path, self.records = Path(name or "records"), list(path)
        self.media_root = Path(media_root)
        self.formatter = formatter
        self.processors = dict(processors)
        self.max_length = max_length
        self.task = task
        self.name = name or self.path.stem
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.records)

    def task_of(self, record: Mapping[str, Any]) -> str:
        return record.get("task") or self.task or "unknown"

    def reference(self, index: int) -> str:
        """The first answer of record ``index`` (the target that evaluation compares with)."""
        return self.records[index]["conversations"][1]["value"]

    def _media(self, record: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        media = {}
        convs = record["conversations"]
        for name, spec in self.formatter.specs.items():
            rel = record.get(spec.record_key)
            n_ph = count_placeholders(convs, spec.placeholder)
            if rel is None and n_ph == 0:
                continue
            if rel is None or n_ph != 1:
                raise SampleError(
                    f"{n_ph} {spec.placeholder} placeholders for "
                    f"{'no' if rel is None else 'one'} {spec.record_key} file"
                )
            if name not in self.processors:
                raise SampleError(f"no processor configured for modality {name!r}")
            media[name] = self.processors[name](self.media_root / rel)
        return media

    def _build(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        convs = record.get("conversations")
        if not convs or len(convs) < 2:
            raise SampleError("record has no human/gpt conversation")
        media = self._media(record)
        input_ids, labels = self.formatter.encode(convs)
        if len(input_ids) > self.max_length:
            raise SampleError(f"{len(input_ids)} tokens > max_length {self.max_length}")
        # The first answer's first label ends the first prompt: no second tokenisation needed.
        first_answer = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        return {
            "id": str(record.get("id", index)),
            "task": self.task_of(record),
            "dataset": self.name,
            "input_ids": input_ids,
            "labels": labels,
            "prompt_ids": input_ids[:first_answer],
            "reference": convs[1]["value"],
            "prompt": convs[0]["value"],
            "media": media,
            "media_paths": {
                m: str(self.media_root / record[s.record_key])
                for m, s in self.formatter.specs.items()
                if m in media
            },
        }

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self._build(index)
        except (SampleError, MediaError, KeyError, TypeError) as err:
            if self.on_error == "raise":
                raise SampleError(f"{self.path}[{index}]: {err}") from err
            log.warning("skipping %s[%d]: %s", self.path, index, err)
            return {"skipped": f"{type(err).__name__}", "dataset": self.name}


class GroundingCollator:
    """Batch samples: right-padded training ids, left-padded prompts, media stacked per modality.

    Skipped samples (``{"skipped": reason}``) are dropped and reported in ``batch["skipped"]``
    so the training module can count them.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        skipped = [s["skipped"] for s in samples if "skipped" in s]
        samples = [s for s in samples if "skipped" not in s]
        batch: dict[str, Any] = {"skipped": skipped, "size": len(samples)}
        if not samples:
            return batch
        ids = [s["input_ids"] for s in samples]
        prompts = [s["prompt_ids"] for s in samples]
        batch["input_ids"] = pad_sequences(ids, self.pad_token_id)
        batch["attention_mask"] = pad_sequences([[1] * len(x) for x in ids], 0)
        batch["labels"] = pad_sequences([s["labels"] for s in samples], IGNORE_INDEX)
        batch["prompt_ids"] = pad_sequences(prompts, self.pad_token_id, left=True)
        batch["prompt_mask"] = pad_sequences([[1] * len(x) for x in prompts], 0, left=True)
        names = sorted({m for s in samples for m in s["media"]})
        batch["media"] = {
            m: torch.stack([s["media"][m] for s in samples if m in s["media"]]) for m in names
        }
        for key in ("id", "task", "dataset", "reference", "prompt", "media_paths"):
            batch[key] = [s[key] for s in samples]
        return batch
