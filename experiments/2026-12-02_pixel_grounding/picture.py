"""Predicted vs true masks of a trained pixel-grounding run, on its first validation samples.

Usage:
    python experiments/2026-12-02_pixel_grounding/picture.py RUN_DIR [--n 8] [--out masks.png]

Loads ``RUN_DIR/checkpoints/last.ckpt`` with the run's own config, generates answers for the
first ``--n`` validation samples and draws each image with the true mask (green outline) and
the mask of the first generated ``[SEG]`` (magenta-blue fill), titled with the prompt's object and the
sample's IoU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

from groundinggpt.build import build_datamodule, build_model  # noqa: E402
from groundinggpt.models.generation import decode_answers, generate_tokens  # noqa: E402
from groundinggpt.training.segmentation import answer_masks, target_masks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "masks.png")
    p.add_argument("--by-objects", action="store_true", help="IoU by object count, all val")
    args = p.parse_args()
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    cfg.paths.root_dir = str(Path(__file__).resolve().parents[2])  # no Hydra app here
    cfg.paths.output_dir = str(args.run)
    cfg.ckpt_path = str(args.run / "checkpoints" / "last.ckpt")
    cfg.data.num_workers = 0
    cfg.data.eval_batch_size = args.n
    model, tokenizer = build_model(cfg, "ckpt_path")
    model.eval()
    dm = build_datamodule(cfg.data, model, tokenizer)
    dm.prepare_data()
    dm.setup()
    if args.by_objects:
        return by_objects(model, tokenizer, dm)
    batch = next(iter(dm.val_dataloader()))
    tokens = generate_tokens(model, tokenizer, batch, {"max_new_tokens": 16})
    texts = decode_answers(tokenizer, tokens)
    preds = answer_masks(model, batch, tokens, tokenizer.pad_token_id)
    truths = target_masks(batch)
    fig, axes = plt.subplots(2, (args.n + 1) // 2, figsize=(2.6 * ((args.n + 1) // 2), 5.6))
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(truths):
            continue
        i = batch["seg_owner"][k]
        img = np.asarray(Image.open(batch["media_paths"][i]["image"]).convert("RGB"))
        truth = truths[k].numpy()
        pred = preds[k][0].numpy() if preds[k].shape[0] else np.zeros_like(truth)
        iou = (pred & truth).sum() / max((pred | truth).sum(), 1)
        ax.imshow(img)
        ax.imshow(np.ma.masked_where(~pred, pred), cmap="cool", alpha=0.6)
        ax.contour(truth, levels=[0.5], colors="lime", linewidths=1.2)
        name = batch["prompt"][i].split("segment the ")[-1].split(" in this")[0]
        ax.set_title(f'{name}\nIoU {iou:.2f}  "{texts[i][:18]}"', fontsize=8)
    fig.suptitle("magenta-blue: predicted mask (first [SEG]); green: true outline", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def by_objects(model, tokenizer, dm) -> None:
    """Mean IoU of the first mask per number of objects in the image (every val sample)."""
    records = {str(r["id"]): r for ds in dm.datasets["val"].values() for r in ds.records}
    ious: dict[int, list[float]] = {}
    for batch in dm.val_dataloader():
        tokens = generate_tokens(model, tokenizer, batch, {"max_new_tokens": 16})
        preds = answer_masks(model, batch, tokens, tokenizer.pad_token_id)
        for k, truth in enumerate(target_masks(batch)):
            i = batch["seg_owner"][k]
            n = len(records[batch["id"][i]]["meta"]["objects"])
            pred = preds[k][0] if preds[k].shape[0] else torch.zeros_like(truth)
            inter, union = (pred & truth).sum().item(), (pred | truth).sum().item()
            ious.setdefault(n, []).append(inter / max(union, 1))
    for n, values in sorted(ious.items()):
        print(f"{n} object(s): {len(values)} samples, mean IoU {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
