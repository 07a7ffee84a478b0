"""Feature-cache entries at the real GroundingGPT-7B widths: bytes per item and read time.

The three frozen encoders of ``model=groundinggpt_7b`` (CLIP ViT-L/14-336, EVA-g on 64
frames, ImageBind-H audio on 3 clips) are built on the meta device (no memory, no weights)
and run on meta inputs of the real media sizes, which gives the exact shape of what the cache
stores per media file. For each, random features of that shape are written through the
project's own `FeatureCache` in bfloat16 and float32 and read back ``--reads`` times (the
page cache is warm after the write: this is the read time of a cache in memory, the case of
a dataset that fits in RAM; a cold disk adds its own latency per MB).

Usage:
    python experiments/2026-12-02_feature_cache_real_size/measure.py --reads 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

from groundinggpt.models.feature_cache import FeatureCache

ROOT = Path(__file__).resolve().parents[2]
# Real media tensor sizes (per item) fed by the 7B config's processors.
MEDIA = {
    "image": (3, 336, 336),  # CLIP ViT-L/14 at 336 px
    "video": (64, 3, 224, 224),  # 64 frames at 224 px into EVA-g
    "audio": (3, 1, 128, 204),  # ImageBind: 3 clips of 128 mel bins x 204 frames
}


def feature_shapes() -> dict[str, tuple[int, ...]]:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={ROOT}", "model=groundinggpt_7b"])
    shapes = {}
    for name, enc_cfg in cfg.model.encoders.items():
        with torch.device("meta"):
            encoder = hydra.utils.instantiate(enc_cfg, _convert_="partial").eval()
            out = encoder(torch.empty(1, *MEDIA[name], device="meta"))
        shapes[name] = tuple(out.shape[1:])
        print(f"{name}: {type(encoder).__name__} -> features {shapes[name]}", flush=True)
    return shapes


def read_times(shape, dtype, reads: int, folder: Path) -> tuple[int, float]:
    media = folder / f"media_{len(shape)}_{dtype}.bin"
    media.write_bytes(torch.randn(16).numpy().tobytes())  # the key is this file's digest
    cache = FeatureCache(folder / "cache", "f" * 64, dtype)
    cache.put(media, torch.randn(shape))
    nbytes = cache.path(media).stat().st_size
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        features = cache.get(media)
        features.float().sum()  # touch every value
        times.append(time.perf_counter() - start)
    return nbytes, statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reads", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = p.parse_args()
    shapes = feature_shapes()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in shapes.items():
            for dtype in (torch.bfloat16, torch.float32):
                nbytes, read_s = read_times(shape, dtype, args.reads, Path(tmp))
                key = f"{name}/{str(dtype).removeprefix('torch.')}"
                results[key] = {
                    "feature_shape": list(shape),
                    "bytes_per_item": nbytes,
                    "gb_per_1k_items": round(nbytes * 1000 / 1e9, 2),
                    "read_ms_per_item": round(read_s * 1e3, 2),
                    "read_gb_per_s": round(nbytes / read_s / 1e9, 2),
                }
                r = results[key]
                print(
                    f"{key:<16} {r['bytes_per_item'] / 1e6:9.2f} MB/item "
                    f"{r['gb_per_1k_items']:8.2f} GB per 1k  read {r['read_ms_per_item']:8.2f} ms"
                )
    args.out.write_text(json.dumps({"shapes": shapes, "entries": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
