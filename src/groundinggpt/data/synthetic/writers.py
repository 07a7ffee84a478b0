"""Deterministic media writers: PNG (PIL), MPEG-4 video (PyAV) and 16-bit PCM WAV (stdlib)."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write a uint8 ``(H, W, 3)`` array as PNG (PIL adds no timestamp, so bytes are stable)."""
    Image.fromarray(rgb, mode="RGB").save(path, format="PNG")


def write_mp4(
    path: Path,
    frames: np.ndarray,
    fps: int,
    bit_rate: int = 4_000_000,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    frame_ms: Sequence[int] | None = None,
) -> None:
    """Write uint8 ``(T, H, W, 3)`` frames as an MPEG-4 Part 2 mp4 that decord reads.

    A high bit-rate and a low quantiser range keep flat palette colours close to exact; a single
    encoder thread keeps the bytes reproducible.

    Args:
        audio: optional mono float samples in [-1, 1]: muxed as an AAC track.
        frame_ms: optional per-frame durations in milliseconds (a variable frame rate video).
    """
    import av

    _, height, width, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"qmin": "1", "qmax": "3"}
        if frame_ms is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        pts = 0
        for i, frame in enumerate(frames):
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if frame_ms is not None:
                out.pts, out.time_base = pts, Fraction(1, 1000)
                pts += frame_ms[i]
            for packet in stream.encode(out):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            chunk = av.AudioFrame.from_ndarray(
                np.asarray(audio, np.float32)[None], format="fltp", layout="mono"
            )
            chunk.sample_rate = sample_rate
            for packet in [*sound.encode(chunk), *sound.encode()]:
                container.mux(packet)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write float samples in [-1, 1] as mono 16-bit PCM WAV; returns ``path``."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path


def tone(
    rng: np.random.Generator, freq: float, seconds: float, sample_rate: int, noise_std: float = 0.01
) -> np.ndarray:
    """A sine tone with random amplitude and phase, short fades (no clicks) and mild noise."""
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    amp = rng.uniform(0.3, 0.6)
    x = amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    fade = min(n // 2, round(0.01 * sample_rate))
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
    x[:fade] *= ramp
    x[n - fade :] *= ramp[::-1]
    return x + rng.normal(0.0, noise_std, size=n)
