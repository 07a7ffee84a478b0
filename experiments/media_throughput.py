"""Media decoding throughput on this machine, and the DataLoader vs the tiny model's step rate.

    python experiments/media_throughput.py --out experiments/2026-11-23_media_throughput

Measures, in one process with one decoder thread and one torch thread (what one DataLoader
worker has; PyTorch gives each worker one thread):

- video clips/s: `VideoProcessor` (64 frames uniform in time, 224 px) on generated h264 clips
  (640x360, 25 fps, 30 s, keyframe every 250 frames, like typical web video);
- audio clips/s: `AudioProcessor` (3 x 2 s Kaldi fbank clips) on a 10 s wav and on the aac
  track of an mp4;
- images/s: `ImageProcessor` on 640x480 JPEGs, with its own resize (64 px, the tiny
  default) and with `CLIPImageProcessor` at 336 px (the real model);
- annotation files: load time and memory held for a 300k-record file, `RecordStore` vs
  ``json.load``;
- the embedded default (`experiment=stage2_fine`): DataLoader samples/s with the configured
  workers vs the tiny model's training samples/s on already-loaded batches.

Writes ``results.json`` into ``--out``. Media fixtures are generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from groundinggpt.data.media import AudioProcessor, ImageProcessor, VideoProcessor


def rate(fn: Callable[[int], object], n_items: int, min_seconds: float) -> dict[str, float]:
    """Calls ``fn(i)`` for ``i = 0, 1, ...`` (cycling over ``n_items``) for ``min_seconds``
    after one warm-up call; returns items/s and the number of calls timed."""
    fn(0)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds or calls < 3:
        fn(calls % n_items)
        calls += 1
    elapsed = time.perf_counter() - start
    return {"per_s": calls / elapsed, "calls": calls, "seconds": round(elapsed, 2)}


def write_video(path: Path, seconds: int, fps: int = 25, audio: bool = True) -> Path:
    """h264 640x360 with a moving gradient (so frames differ) and an optional aac tone."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 640, 360, "yuv420p"
        v.options = {"preset": "veryfast", "g": "250"}
        if audio:  # every stream must exist before the first packet is written
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        base = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            frame = np.roll(base, 4 * i, axis=1)
            for p in v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if audio:
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(seconds * 16000) / 16000)
            frame = av.AudioFrame.from_ndarray(tone[None].astype(np.float32), "fltp", "mono")
            frame.sample_rate = 16000
            for p in [*a.encode(frame), *a.encode()]:
                c.mux(p)
    return path


def write_wav(path: Path, seconds: float) -> Path:
    import wave

    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((tone * 32767).astype("<i2").tobytes())
    return path


def media_rates(tmp: Path, seconds: float) -> dict[str, dict[str, float]]:
    videos = [write_video(tmp / f"v{i}.mp4", 30) for i in range(2)]
    wavs = [write_wav(tmp / f"a{i}.wav", 10.0) for i in range(2)]
    images = []
    for i in range(4):
        arr = np.random.default_rng(i).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp / f"i{i}.jpg", quality=90)
        images.append(tmp / f"i{i}.jpg")
    from transformers import CLIPImageProcessor

    clip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    video = VideoProcessor(num_frames=64, size=224)
    audio = AudioProcessor()
    return {
        "video_64x224_clips": rate(lambda i: video(videos[i % 2]), 2, seconds),
        "video_16x64_clips_tiny": rate(lambda i: VideoProcessor(16, 64)(videos[i % 2]), 2, seconds),
        "audio_wav_10s_clips": rate(lambda i: audio(wavs[i % 2]), 2, seconds),
        "audio_mp4_track_30s_clips": rate(lambda i: audio(videos[i % 2]), 2, seconds),
        "image_tiny_64": rate(lambda i: ImageProcessor(size=64)(images[i % 4]), 4, seconds),
        "image_clip_336": rate(lambda i: ImageProcessor(processor=clip)(images[i % 4]), 4, seconds),
    }


def record_store_rates(tmp: Path, n: int = 300_000) -> dict[str, float]:
    """Loading a released-size annotation file: `RecordStore` vs plain ``json.load``."""
    import gc

    from groundinggpt.data.records import RecordStore

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1e3 for line in f if line.startswith("VmRSS"))

    question = (
        "<image>\nPlease provide the bounding box coordinate of the region: the man on the left"
    )
    records = [
        {"id": f"{i:012d}", "image": f"coco/train2014/{i:012d}.jpg", "conversations": [
            {"from": "human", "value": question},
            {"from": "gpt", "value": "[0.123, 0.456, 0.789, 0.901]"}]}
        for i in range(n)
    ]  # fmt: skip
    path = tmp / "big.json"
    path.write_text(json.dumps(records))
    del records
    out: dict[str, float] = {"records": n, "file_mb": path.stat().st_size / 1e6}
    for name, load in (("store", RecordStore), ("json", lambda p: json.loads(p.read_text()))):
        gc.collect()
        before, start = rss_mb(), time.perf_counter()
        held = load(path)
        out[f"{name}_load_s"] = time.perf_counter() - start
        gc.collect()
        out[f"{name}_held_mb"] = rss_mb() - before
        start = time.perf_counter()
        for i in range(0, n, n // 10_000):
            held[i]
        out[f"{name}_read_us"] = (time.perf_counter() - start) / 10_000 * 1e6
        del held
    return out


def default_run_rates(tmp: Path, seconds: float) -> dict[str, float]:
    """DataLoader samples/s vs training samples/s of the embedded default (stage2_fine)."""
    from hydra import compose, initialize_config_dir

    from groundinggpt.train import build

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "configs"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=stage2_fine",
                f"paths.root_dir={root}",
                f"paths.output_dir={tmp / 'run'}",
            ],
        )
    module, dm, _ = build(cfg)
    dm.setup("fit")
    loader = dm.train_dataloader()
    bs = loader.batch_size
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start, batches = time.perf_counter(), []
    while time.perf_counter() - start < seconds:
        batches.append(next(it))
    load_s = len(batches) * bs / (time.perf_counter() - start)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    module.train()

    def step(i: int) -> None:
        b = batches[i % len(batches)]
        loss = module.model(b["input_ids"], b["attention_mask"], b["media"], b["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    out = {"batch_size": bs, "num_workers": dm.num_workers, "loader_samples_per_s": load_s}
    # On a shared, oversubscribed CPU, torch's worker threads spin-wait on each other; one
    # thread is often faster there, so both are measured.
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        train = rate(step, len(batches), seconds)
        out[f"train_samples_per_s_{n}_threads"] = train["per_s"] * bs
        out[f"train_steps_per_s_{n}_threads"] = train["per_s"]
    torch.set_num_threads(threads)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--skip-default-run", action="store_true")
    parser.add_argument("--skip-media", action="store_true", help="only the default run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        # DataLoader workers run with one torch thread; measure media the same way.
        results: dict[str, object] = {}
        if not args.skip_media:
            torch.set_num_threads(1)
            results["media"] = media_rates(Path(tmp), args.seconds)
            torch.set_num_threads(threads)
            results["annotations"] = record_store_rates(Path(tmp))
        if not args.skip_default_run:
            results["default_run"] = default_run_rates(Path(tmp), args.seconds)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    results["env"] = {
        "commit": commit.stdout.strip(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    name = "results_default_run.json" if args.skip_media else "results.json"
    (args.out / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
