"""Small media and annotation files in the released format, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image

from groundinggpt.data.synthetic import writers

SR = 16000


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SR) -> Path:
    """16-bit mono PCM wav."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return writers.write_wav(path, samples, sample_rate)


def write_audio(path: Path, samples: np.ndarray, sample_rate: int = SR) -> Path:
    """Mono audio in the container/codec the suffix names (``.flac``, ``.mp3``), via PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = {".flac": "flac", ".mp3": "libmp3lame"}[path.suffix]
    fmt = "s16" if codec == "flac" else "fltp"
    with av.open(str(path), "w") as c:
        stream = c.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        data = samples.astype(np.float32)[None]  # (1, T)
        if fmt == "s16":
            data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)
    return path


def write_mp4(
    path: Path,
    n_frames: int,
    fps: int = 8,
    audio: np.ndarray | None = None,
    frame_ms: list[int] | None = None,
    size: int = 32,
) -> Path:
    """mpeg4 video (+ optional aac track). Frame i is a flat grey of value 8 * i + 4.

    ``frame_ms`` gives each frame its own duration in milliseconds (variable frame rate).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = 8 * np.arange(n_frames, dtype=np.uint8) + 4
    frames = np.broadcast_to(grey[:, None, None, None], (n_frames, size, size, 3)).copy()
    writers.write_mp4(path, frames, fps, 2_000_000, audio=audio, sample_rate=SR, frame_ms=frame_ms)
    return path


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (50, 30)) -> Path:
    """A random image stored in PIL ``mode`` (TIFF for modes PNG cannot hold)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        img = rgb.convert(mode)
    img.save(path)
    return path


def write_records(path: Path, records: list, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def conv(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="session")
def files() -> SimpleNamespace:
    """The writers above, for tests in this folder."""
    return SimpleNamespace(
        wav=write_wav,
        audio=write_audio,
        mp4=write_mp4,
        image=write_image,
        records=write_records,
        conv=conv,
        SR=SR,
    )


def _release_layout(root: Path) -> dict[str, Path]:
    """A miniature of the released data: annotation files + image/video/audio folders."""
    ann, img, vid, aud = (root / d for d in ("groundinggpt", "images", "videos", "audio"))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    for i, mode in enumerate(["RGB", "L", "RGBA", "P", "CMYK", "I;16"]):
        write_image(img / "coco" / f"{i}.{'tiff' if mode == 'CMYK' else 'png'}", mode)
    write_mp4(vid / "didemo" / "a.mp4", 12, audio=tone)
    write_mp4(vid / "charades" / "b.mp4", 5)
    write_wav(aud / "vggss" / "s.wav", tone)
    write_audio(aud / "clotho" / "c.flac", tone)
    imgs = sorted((img / "coco").iterdir())
    box = "[0.100, 0.200, 0.500, 0.600]"
    refcoco = [
        {"id": f"r{i}", "image": f"coco/{p.name}", "conversations": conv("<image>\nthe dog", box)}
        for i, p in enumerate(imgs)
    ]
    files = {
        "refcoco.json": refcoco,
        "visual_genome.json": refcoco[:2],
        "didemo.json": [{"id": "d", "video": "didemo/a.mp4", "conversations": conv("<video>\nx", "{0.10, 0.50}")}],
        "charades_sta.json": [{"id": "c", "video": "charades/b.mp4", "conversations": conv("<video>\ny", "{0.00, 0.20}")}],
        "vggss.json": [
            {"id": "v", "image": f"coco/{imgs[0].name}", "sound": "vggss/s.wav", "conversations": conv("<image>\n<sound>\nwhere", box)}
        ],
        "Wavecaps.json": [{"id": "w", "sound": "vggss/s.wav", "conversations": conv("<sound>\ndescribe", "a tone")}],
        "Clotho.json": [{"id": "k", "sound": "clotho/c.flac", "conversations": conv("<sound>\ndescribe", "a tone")}],
        "flickr30k_detail.json": refcoco[:1],
        "flickr30k_conversation.json": refcoco[1:2],
        "activitycaptions.json": [{"id": "a", "video": "didemo/a.mp4", "conversations": conv("<video>\nwhat", "a grey {0.00, 1.00}")}],
    }  # fmt: skip
    for name, records in files.items():
        write_records(ann / name, records)
    llava, valley = root / "llava", root / "valley"
    write_image(llava / "images" / "p.png")
    write_records(llava / "blip_laion_cc_sbu_558k.json", [{"id": "p", "image": "p.png", "conversations": conv("<image>\n", "a picture")}])  # fmt: skip
    write_records(llava / "llava_instruct_150k.json", refcoco[:1], jsonl=True)
    write_mp4(valley / "videos" / "v.mp4", 6)
    write_records(valley / "chat.json", [{"id": "q", "video": "v.mp4", "conversations": conv("<video>\n", "a video")}])  # fmt: skip
    return {"root": root, "groundinggpt": ann, "images": img, "videos": vid, "audio": aud}


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory) -> dict[str, Path]:
    """Folders of a tiny dataset laid out like the GroundingGPT release (written once)."""
    return _release_layout(tmp_path_factory.mktemp("release"))


# Patch tokens per media item of the small datasets the data tests build.
TOKENS = {"image": 3, "video": 2, "audio": 2}


@pytest.fixture(scope="module")
def formatter():
    """The conversation template over the project's tokenizer with the nine modality tokens."""
    from groundinggpt.data.conversation import ConversationFormatter
    from groundinggpt.data.tokenizer import build_tokenizer
    from groundinggpt.modalities import SPECIAL_TOKENS, modality_specs

    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return ConversationFormatter(tok, modality_specs(TOKENS))


@pytest.fixture(scope="module")
def processors() -> dict:
    """Media processors at 8 px / 2 frames: fast and still the real code paths."""
    from groundinggpt.data.media import AudioProcessor, ImageProcessor, VideoProcessor

    return {
        "image": ImageProcessor(size=8),
        "video": VideoProcessor(num_frames=2, size=8),
        "audio": AudioProcessor(),
    }
