"""Epoch time of the default stage-2 mixture with and without the frozen-encoder feature cache.

    python experiments/2026-12-02_feature_cache/benchmark.py --batches 150

Three fits of the same batches (the embedded default: tiny model, synthetic data, CPU): no
cache; cache filling (every media file encoded once and written); cache reading. Prints the
seconds of each and the ratios measured in this one run, and the cache size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[2]


def fit(batches: int, cache: Path | None) -> tuple[float, list[float]]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from groundinggpt.train import build

    overrides = [
        "experiment=stage2_fine",
        f"paths.root_dir={REPO}",
        f"paths.output_dir={tempfile.mkdtemp()}",
        f"+trainer.limit_train_batches={batches}",
        "+trainer.limit_val_batches=0",
        "trainer.max_epochs=1",
        "~callbacks.progress_bar",
        "+trainer.enable_progress_bar=false",
        "~callbacks.model_checkpoint",
    ]
    if cache is not None:
        overrides.append(f"module.feature_cache={{dir:{cache}}}")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    L.seed_everything(cfg.seed, workers=True)  # the same init and batches in every fit
    module, dm, trainer = build(cfg)

    class Losses(Callback):
        values: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    losses = Losses()
    losses.values = []
    trainer.callbacks.append(losses)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start, losses.values


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=150)
    args = p.parse_args()
    cache = Path(tempfile.mkdtemp()) / "features"
    plain, plain_losses = fit(args.batches, None)
    filling, _ = fit(args.batches, cache)
    size_mb = sum(f.stat().st_size for f in cache.rglob("*.safetensors")) / 1e6
    files = len(list(cache.rglob("*.safetensors")))
    cached, cached_losses = fit(args.batches, cache)
    same = max(abs(a - b) for a, b in zip(plain_losses, cached_losses, strict=True))
    result = {
        "batches": args.batches,
        "no_cache_s": round(plain, 1),
        "filling_s": round(filling, 1),
        "cached_s": round(cached, 1),
        "speedup_cached_vs_none": round(plain / cached, 2),
        "cost_filling_vs_none": round(filling / plain, 2),
        "cache_files": files,
        "cache_mb": round(size_mb, 1),
        "max_loss_difference_cached_vs_none": same,
    }
    print(json.dumps(result, indent=1))
    shutil.rmtree(cache.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
