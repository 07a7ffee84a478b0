"""Pixel grounding in training and validation: mask losses, masks of generated answers, metrics.

- `segmentation_losses`: teacher-forced, the hidden state before each ``[SEG]`` of the batch
  prompts SAM's mask decoder; BCE and Dice against the target masks in SAM's frame (image
  resized to the longest side and padded; padding pixels do not count). The module adds
  ``mask_loss.bce * bce + mask_loss.dice * dice`` (GLaMM: 2.0 and 0.5) to the LM loss.
- `answer_masks`: after generation, one teacher-forced pass over prompt + answer gives the
  hidden states of the generated ``[SEG]`` tokens and their masks in original pixels (an
  answer without ``[SEG]`` has none: a miss).
- `MaskMetrics`: cIoU / gIoU of the first mask per sample, for the tasks in `FIRST_MASK_TASKS`,
  with the same ``{task}/count`` convention as `GroundingMetrics`.
- `mask_baselines`: the two trivial baselines (the mean training mask; the whole image).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groundinggpt.grounding.mask_metrics import MaskIoU
from groundinggpt.grounding.masks import (
    decode_mask,
    dice_loss,
    mask_bce_loss,
    mask_logits_to_original,
    sam_valid_region,
)
from groundinggpt.models.grounding_model import GroundingGPT

# Tasks scored by the mask of their first [SEG] against one target mask.
FIRST_MASK_TASKS = ("res", "avs")
BASELINE_GRID = 64  # the mean training mask is averaged on this grid of each image


def segmentation_losses(
    model: GroundingGPT, hidden: torch.Tensor, batch: Mapping[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bce, dice)`` of the batch's ``[SEG]`` masks, in SAM's frame, padding excluded."""
    logits = model.predict_masks(
        hidden, batch["input_ids"], batch["seg_pixels"], batch["seg_counts"]
    )
    size = batch["seg_pixels"].shape[-1]
    preds = torch.cat(
        [F.interpolate(x[None], (size, size), mode="bilinear", align_corners=False)[0]
         for x in logits]
    )  # fmt: skip
    targets = torch.cat(list(batch["seg_masks"])).to(preds.device)
    valid = torch.cat(
        [sam_valid_region(h, w, size).expand(n, size, size)
         for (h, w), n in zip(batch["seg_sizes"], batch["seg_counts"], strict=True)]
    ).to(preds.device)  # fmt: skip
    return mask_bce_loss(preds, targets, valid), dice_loss(preds, targets, valid)


def _answer_rows(
    batch: Mapping[str, Any], tokens: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompt + generated ids of the samples with masks, and their mask."""
    rows = []
    for i in batch["seg_owner"]:
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        answer = tokens[i][tokens[i] != pad_token_id]
        rows.append(torch.cat([prompt, answer.to(prompt.device)]))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)], mask[k, : len(row)] = row, 1
    return ids, mask


@torch.no_grad()
def answer_masks(
    model: GroundingGPT,
    batch: Mapping[str, Any],
    tokens: torch.Tensor,
    pad_token_id: int,
    logits: bool = False,
) -> list[torch.Tensor]:
    """Bool masks ``(n_i, H, W)`` in original pixels for the generated answers ``tokens``.

    One entry per sample with masks (``batch["seg_owner"]``); ``n_i`` is the number of
    ``[SEG]`` tokens the model wrote (0: no mask, scored as a miss). With ``logits``, the
    float32 mask logits in original pixels instead (the masks are ``> 0``; AVSBench's
    F-score thresholds their sigmoid).
    """
    ids, mask = _answer_rows(batch, tokens, pad_token_id)
    device = batch["prompt_ids"].device
    ids, mask = ids.to(device), mask.to(device)
    owners = batch["seg_owner"]
    media = _owner_media(batch, owners)
    out = model(ids, mask, media, hidden_states=True)
    counts = (ids[:, 1:] == model.seg_token_id).sum(1).tolist()
    masks = model.predict_masks(out.hidden_states[-1], ids, batch["seg_pixels"], counts)
    size = batch["seg_pixels"].shape[-1]
    maps = [
        mask_logits_to_original(x.float(), hw, size)
        for x, hw in zip(masks, batch["seg_sizes"], strict=True)
    ]
    return maps if logits else [m > 0 for m in maps]


def _owner_media(batch: Mapping[str, Any], owners: Sequence[int]) -> dict[str, torch.Tensor]:
    """The media tensors of the samples ``owners`` (items are stacked in sample order)."""
    media = {}
    for name, stacked in batch["media"].items():
        have = [i for i, paths in enumerate(batch["media_paths"]) if name in paths]
        rows = [have.index(i) for i in owners if i in have]
        media[name] = stacked[rows]
    return media


def target_masks(batch: Mapping[str, Any]) -> list[torch.Tensor]:
    """The first target mask of each sample with masks, decoded in original pixels."""
    out = []
    for seg, (h, w) in zip(batch["seg_targets"], batch["seg_sizes"], strict=True):
        out.append(torch.from_numpy(decode_mask(seg[0], h, w)))
    return out


class MaskMetrics(nn.Module):
    """cIoU / gIoU per mask task (first mask of each answer vs the target), DDP-synced.

    Keys: ``{task}/ciou``, ``{task}/giou``, ``{task}/count``.
    """

    def __init__(
        self, tasks: Sequence[str] = FIRST_MASK_TASKS, sync_on_compute: bool = True
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.metrics = nn.ModuleDict(
            {t: MaskIoU(sync_on_compute=sync_on_compute) for t in self.tasks}
        )

    def update(
        self,
        tasks: Sequence[str],
        preds: Sequence[torch.Tensor | None],
        targets: Sequence[torch.Tensor],
    ) -> None:
        for task in self.tasks:
            idx = [i for i, t in enumerate(tasks) if t == task]
            if idx:
                self.metrics[task].update([preds[i] for i in idx], [targets[i] for i in idx])

    def compute(self) -> dict[str, float]:
        """Flat ``{"task/key": value}``; tasks without samples (on all ranks) are omitted."""
        out = {}
        for task, metric in self.metrics.items():
            with warnings.catch_warnings():  # "compute before update": a task not in this split
                warnings.simplefilter("ignore")
                values = metric.compute()  # on every rank, empty or not: it syncs
            n = int(values["n"])
            if n == 0:
                continue
            out[f"{task}/ciou"] = float(values["ciou"])
            out[f"{task}/giou"] = float(values["giou"])
            out[f"{task}/count"] = float(n)
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


def mean_mask(train_masks: Sequence[np.ndarray], grid: int = BASELINE_GRID) -> np.ndarray:
    """The trivial mean-mask answer on a ``grid x grid`` frame of the image (stretched).

    The per-pixel mean of the training masks, each resized to the grid, keeping the most
    often covered pixels up to the mean target area (a mean thresholded at 0.5 would be
    empty when objects appear anywhere).
    """
    stack = np.stack([_to_grid(m, grid) for m in train_masks])  # (N, g, g)
    freq = stack.mean(0)
    area = int(round(stack.sum((1, 2)).mean()))
    keep = np.zeros(grid * grid, dtype=bool)
    keep[np.argsort(-freq, axis=None, kind="stable")[: max(area, 1)]] = True
    return keep.reshape(grid, grid)


def _to_grid(mask: np.ndarray, grid: int) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, (grid, grid), mode="bilinear", align_corners=False)[0, 0].numpy()


def _from_grid(mask: np.ndarray, height: int, width: int) -> torch.Tensor:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(t, (height, width), mode="nearest")[0, 0] > 0.5


def mask_baselines(
    train: Mapping[str, Sequence[np.ndarray]],
    evals: Mapping[str, Sequence[np.ndarray]],
    grid: int = BASELINE_GRID,
) -> dict[str, float]:
    """``{task}/ciou`` etc. of the two trivial answers, and the better one as the baseline.

    Keys: ``{task}/mean_mask/ciou``, ``{task}/whole_image/ciou`` (and ``giou``), and
    ``{task}/ciou``, ``{task}/giou`` of the baseline with the higher cIoU.
    """
    out: dict[str, float] = {}
    for task, targets in evals.items():
        if not targets or not train.get(task):
            continue
        average = mean_mask(train[task], grid)
        answers = {
            "mean_mask": [_from_grid(average, *t.shape) for t in targets],
            "whole_image": [torch.ones(t.shape, dtype=torch.bool) for t in targets],
        }
        best = None
        for name, preds in answers.items():
            metric = MaskIoU(sync_on_compute=False)
            metric.update(preds, [torch.from_numpy(t) for t in targets])
            values = metric.compute()
            out[f"{task}/{name}/ciou"] = float(values["ciou"])
            out[f"{task}/{name}/giou"] = float(values["giou"])
            if best is None or values["ciou"] > out[f"{task}/{best}/ciou"]:
                best = name
        out[f"{task}/ciou"] = out[f"{task}/{best}/ciou"]
        out[f"{task}/giou"] = out[f"{task}/{best}/giou"]
    return out


__all__ = [
    "FIRST_MASK_TASKS",
    "MaskMetrics",
    "answer_masks",
    "mask_baselines",
    "mean_mask",
    "segmentation_losses",
    "target_masks",
]
