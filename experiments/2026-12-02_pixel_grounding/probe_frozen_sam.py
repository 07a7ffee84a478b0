"""Can the tiny mask decoder learn on a frozen random-init SAM ViT? (300 steps, one probe)

The pixel decoder of ``model=tiny_seg`` alone (no LLM): each referring expression's object name
gets a learned 128-d embedding that stands in for the LLM's [SEG] hidden state; BCE + Dice as
in training (weights 2.0 / 0.5), AdamW lr 1e-3, batch 16, on 1024 synthetic
referring-segmentation records (``data/synthetic``, written by
``python train.py experiment=stage2_fine_seg``). Prints step, BCE, Dice and the batch cIoU,
then the held-out IoU per object count on the 256 ``res_val`` records. Arguments: ``frozen`` or
``train_enc``, the number of steps (default 300), Hydra overrides of the model.

Usage:
    python experiments/2026-12-02_pixel_grounding/probe_frozen_sam.py frozen
    python experiments/2026-12-02_pixel_grounding/probe_frozen_sam.py train_enc
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

from groundinggpt.data.segmentation import SegmentationProcessor
from groundinggpt.grounding.masks import dice_loss, mask_bce_loss, sam_valid_region

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "synthetic"


def object_name(record: dict) -> str:
    return record["conversations"][0]["value"].split("segment the ")[1].split(" in this")[0]


def load(n: int = 1024, split: str = "train", names: list[str] | None = None):
    records = json.loads((DATA / "annotations" / f"res_{split}.json").read_text())[:n]
    proc = SegmentationProcessor(size=64)
    names = names or sorted({object_name(r) for r in records})
    pixels, masks, valid, labels = [], [], [], []
    for r in records:
        s = proc(DATA / r["image"], r["masks"])
        pixels.append(s["pixels"])
        masks.append(s["masks"][0].float())
        valid.append(sam_valid_region(*s["size"], 64))
        labels.append(names.index(object_name(r)))
    stacked = torch.stack(pixels), torch.stack(masks), torch.stack(valid)
    counts = torch.tensor([len(r["meta"]["objects"]) for r in records])
    return (*stacked, torch.tensor(labels), names, counts)


def main() -> None:
    torch.manual_seed(0)
    pixels, masks, valid, labels, all_names, _ = load()
    n_names = len(all_names)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny_seg", *sys.argv[3:]])
    decoder = hydra.utils.instantiate(cfg.model.pixel_decoder, _convert_="partial")(llm_width=128)
    if sys.argv[1] == "train_enc":
        decoder.sam.vision_encoder.requires_grad_(True)
    names = torch.nn.Embedding(n_names, 128)
    params = [p for p in decoder.parameters() if p.requires_grad] + list(names.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    start = time.time()
    for step in range(int(sys.argv[2]) if len(sys.argv) > 2 else 300):
        idx = torch.randint(0, len(pixels), (16,))
        logits = decoder(decoder.embed_images(pixels[idx]), [names(labels[i : i + 1]) for i in idx])
        pred = torch.cat(logits)
        bce = mask_bce_loss(pred, masks[idx], valid[idx])
        dice = dice_loss(pred, masks[idx], valid[idx])
        optimizer.zero_grad()
        (2 * bce + 0.5 * dice).backward()
        optimizer.step()
        if step % 50 == 0:
            with torch.no_grad():
                p, t = pred > 0, masks[idx] > 0.5
                ciou = ((p & t).sum() / (p | t).sum().clamp(min=1)).item()
            print(
                f"step {step}  bce {bce.item():.3f}  dice {dice.item():.3f}  batch cIoU "
                f"{ciou:.3f}  {time.time() - start:.0f}s",
                flush=True,
            )
    by_objects(decoder, names, all_names)


@torch.no_grad()
def by_objects(decoder, names, all_names) -> None:
    """Held-out IoU (res_val, SAM frame) per number of objects in the image."""
    pixels, masks, valid, labels, _, counts = load(256, "val", all_names)
    logits = decoder(
        decoder.embed_images(pixels), [names(labels[i : i + 1]) for i in range(len(labels))]
    )
    pred, truth = torch.cat(logits) > 0, masks > 0.5
    iou = (pred & truth).flatten(1).sum(1) / (pred | truth).flatten(1).sum(1).clamp(min=1)
    for n in counts.unique().tolist():
        sel = counts == n
        print(f"held out, {n} object(s): {int(sel.sum())} samples, mean IoU {iou[sel].mean():.3f}")


if __name__ == "__main__":
    main()
