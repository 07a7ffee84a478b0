"""What the tiny model's frozen encoders tell their adapters: linear probes on cached features.

Two questions, each answered by a logistic-regression probe trained on the frozen encoder's
outputs of training records and scored on held-out records:

- video (VTG): is the queried shape visible in sampled frame ``t``? Features of one frame
  (the per-frame Q-Former tokens, flattened). A probe near chance means the frozen video
  encoder does not carry *when* the event happens, and no adapter can recover it.
- image (POPE): is a shape of colour ``c`` present / of kind ``k`` present? Features of one
  image (all tokens, flattened). Colour and kind are what a POPE question asks about.

Each probe is compared with the same probe on raw pixels (mean colour per 8x8 cell), the
upper reference of what a linear read-out of the input can do.

Usage:
    python experiments/frozen_feature_probe.py [--n-train 400] [--n-test 200] [overrides...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from throughput import compose_train  # the sibling script: experiment=stage2_fine + overrides

from groundinggpt.build import build_datamodule, build_model


def fit_probe(x_train, y_train, x_test, y_test, steps: int = 300) -> float:
    """Held-out accuracy of an L2-regularised logistic regression (features standardised)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(x_train.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (
            F.binary_cross_entropy_with_logits(x_train @ w + b, y_train) + 1e-3 * w.square().sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x_test @ w + b > 0).float() == y_test).float().mean())


def pixels(media: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Mean colour per ``cell`` x ``cell`` block: ``(..., 3, S, S)`` -> ``(..., 3 * (S/cell)**2)``."""
    lead = media.shape[:-3]
    pooled = F.avg_pool2d(media.reshape(-1, *media.shape[-3:]).float(), cell)
    return pooled.reshape(*lead, -1)


def frame_visible(meta: dict, n_sampled: int) -> torch.Tensor:
    """Whether the target shows at each of ``n_sampled`` uniformly sampled frame times."""
    first, last = meta["frames"]
    n = meta["num_frames"]
    t = (torch.arange(n_sampled) + 0.5) / n_sampled * n  # sampled frame times, in frames
    return ((t >= first) & (t < last + 1)).float()


def video_probe(model, dataset, n_train: int, n_test: int) -> dict:
    feats, pix, labels = [], [], []
    for i in range(n_train + n_test):
        sample = dataset[i]
        video = sample["media"]["video"]  # (N, 3, S, S)
        with torch.no_grad():
            f = model.branches["video"].encode_media(video[None])[0]  # (N, q, D)
        meta = dataset.records[i]["meta"]
        feats.append(f.flatten(1))
        pix.append(pixels(video))
        labels.append(frame_visible(meta, video.shape[0]))
    split = n_train
    out = {}
    # Each frame against its own video's mean frame: what changes when the shape appears.
    centred = [f - f.mean(0, keepdim=True) for f in feats]
    centred_pix = [x - x.mean(0, keepdim=True) for x in pix]
    for name, x in (
        ("features", feats),
        ("pixels", pix),
        ("features_minus_video_mean", centred),
        ("pixels_minus_video_mean", centred_pix),
    ):
        xt, xv = torch.cat(x[:split]), torch.cat(x[split:])
        yt, yv = torch.cat(labels[:split]), torch.cat(labels[split:])
        out[name] = fit_probe(xt, yt, xv, yv)
    out["majority"] = max(
        float(torch.cat(labels[split:]).mean()), 1 - float(torch.cat(labels[split:]).mean())
    )
    # How much a frame's features move when the shape appears, against how much they differ
    # between videos: the share of feature variance that is within a video.
    stacked = torch.stack(feats)  # (V, N, F)
    within = stacked.var(1).mean()
    total = stacked.flatten(0, 1).var(0).mean()
    out["within_video_variance_share"] = float(within / total)
    return out


def image_probe(model, dataset, n_train: int, n_test: int, names: list[str]) -> dict:
    feats, pix, present = [], [], []
    for i in range(n_train + n_test):
        sample = dataset[i]
        image = sample["media"]["image"]  # (3, S, S)
        with torch.no_grad():
            f = model.branches["image"].encode_media(image[None])[0]  # (N, D)
        meta = dataset.records[i]["meta"]
        objs = {o["name"] for o in meta["objects"]}
        feats.append(f.flatten())
        pix.append(pixels(image))
        present.append(torch.tensor([float(any(n in o for o in objs)) for n in names]))
    x_f, x_p, y = torch.stack(feats), torch.stack(pix), torch.stack(present)
    out = {}
    for j, name in enumerate(names):
        yt, yv = y[:n_train, j], y[n_train:, j]
        if yt.sum() < 5 or (1 - yt).sum() < 5:
            continue
        out[name] = {
            "features": fit_probe(x_f[:n_train], yt, x_f[n_train:], yv),
            "pixels": fit_probe(x_p[:n_train], yt, x_p[n_train:], yv),
            "majority": max(float(yv.mean()), 1 - float(yv.mean())),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None)
    p.add_argument("--video-only", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = compose_train([f"seed={args.seed}", "module.feature_cache=null", *args.overrides])
    torch.manual_seed(args.seed)
    model, tokenizer = build_model(cfg)
    model.eval()
    dm = build_datamodule(cfg.data, model, tokenizer)
    dm.prepare_data()
    dm.setup()
    train = dm.datasets["train"]
    result = {"overrides": args.overrides, "seed": args.seed}
    result["video"] = video_probe(model, train["vtg"], args.n_train, args.n_test)
    print("video", json.dumps(result["video"], indent=1), flush=True)
    names = ["red", "green", "blue", "yellow", "circle", "square", "triangle"]
    if not args.video_only:
        result["image"] = image_probe(model, train["rec"], args.n_train, args.n_test, names)
        print("image", json.dumps(result["image"], indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
