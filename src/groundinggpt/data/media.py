"""Media decoding: image, video and audio files -> normalised tensors for the frozen encoders.

Each processor is a small class configured with plain keyword arguments (Hydra instantiates it)
and called on a path. Bad media never yields a silent garbage tensor: it raises `MediaError`
with the path and the reason.

Box geometry: images are padded to a square (centred, as LLaVA's ``expand2square``) before
resizing, and grounding boxes are expressed relative to that padded square
(`groundinggpt.grounding.geometry` converts between original pixels and the padded square).
Pixel boxes are continuous ``(x0, y0, x1, y1)``: pixel ``i`` covers ``[i, i + 1)``.

Error boundary: whatever goes wrong while one file is decoded (PIL, decompression bombs,
decord, audio decoders, resizing, an encoder's image processor) comes out as `MediaError`, a
counted skip with the file and the reason, never as another exception. Images are checked
from their header before any pixel is decoded: more than `MAX_PIXELS` pixels
(``image_too_large``) or a side ratio above `MAX_ASPECT_RATIO` (``extreme_aspect_ratio``,
whose padded square would be huge) are refused without allocating them. A decoded sound
shorter than `MIN_AUDIO_SECONDS` is ``empty_audio`` and one whose peak amplitude stays below
`SILENCE_PEAK` is ``silent_audio``: a corrupt mp3 or a 1-sample wav decodes to near-silence,
which would otherwise train as a real sound.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from groundinggpt.grounding.geometry import pad_offsets

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_COLOR = (122, 116, 104)  # CLIP_MEAN * 255, rounded

# Modes whose values do not fit 0..255; PIL's convert("RGB") would clip them to white.
_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
# Header limits checked before an image is decoded (see `check_image_header`).
MAX_PIXELS = 40_000_000
MAX_ASPECT_RATIO = 20.0
# Audio limits checked after decoding (see `AudioProcessor.load_waveform`): 0.1 s is 8 fbank
# frames; 1e-4 is about 3 steps of 16-bit PCM, far below any recorded or synthetic sound.
MIN_AUDIO_SECONDS = 0.1
SILENCE_PEAK = 1e-4


class MediaError(ValueError):
    """A media file is missing, unreadable or empty.

    Args:
        path: the offending file.
        reason: what is wrong with it (free text, for the log).
        kind: a short machine-readable category used to count skips (``missing_file``,
            ``unreadable_image``, ``empty_video``, ``empty_audio``...).

    Example:
        >>> MediaError("a.png", "file not found", kind="missing_file").kind
        'missing_file'
    """

    def __init__(self, path: str | Path, reason: str, kind: str = "unreadable_media") -> None:
        self.path = str(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{self.path}: {reason}")


def check_media_file(path: str | Path, modality: str = "media") -> Path:
    """``path`` as a Path if it is a non-empty file, else a `MediaError` with its skip kind."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found", kind="missing_file")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty", kind=f"empty_{modality}")
    return path


@contextmanager
def media_errors(path: str | Path, modality: str) -> Iterator[None]:
    """Turn any exception raised while decoding ``path`` into a `MediaError`.

    `MediaError` passes through unchanged; PIL's decompression-bomb error and warning (the
    warning is raised as an error here) become ``image_too_large``; anything else becomes
    ``unreadable_<modality>`` with the exception's type and message as the reason.

    Args:
        path: the file being decoded (named in the error).
        modality: ``image``, ``video`` or ``audio`` (names the skip kind).

    Example:
        >>> with media_errors("a.png", "image"):  # doctest: +ELLIPSIS
        ...     raise ZeroDivisionError("boom")
        Traceback (most recent call last):
        ...
        groundinggpt.data.media.MediaError: a.png: unreadable image (ZeroDivisionError: boom)
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise MediaError(path, f"decompression bomb ({err})", kind="image_too_large") from err
    except Exception as err:
        reason = f"unreadable {modality} ({type(err).__name__}: {err})"
        raise MediaError(path, reason, kind=f"unreadable_{modality}") from err


def check_image_header(
    path: str | Path,
    width: int,
    height: int,
    max_pixels: int | None = MAX_PIXELS,
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> None:
    """`MediaError` if an image's declared size is empty, too large or too elongated.

    Called with the size from the header, before decoding, so a file declaring 20000 x 20000
    pixels costs nothing. ``None`` turns a limit off.

    Args:
        path: the file (named in the error).
        width: declared width in pixels.
        height: declared height in pixels.
        max_pixels: most pixels accepted (``image_too_large`` above).
        max_aspect_ratio: largest ``long side / short side`` accepted (``extreme_aspect_ratio``
            above; the padded square of a 16000 x 1 image would hold 256 M pixels).

    Example:
        >>> check_image_header("a.png", 16000, 1)
        Traceback (most recent call last):
        ...
        groundinggpt.data.media.MediaError: a.png: image is 16000x1, aspect ratio 16000:1 > 20:1
    """
    if width <= 0 or height <= 0:
        raise MediaError(path, "image has zero size", kind="empty_image")
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(
            path, f"image is {width}x{height}, more than {max_pixels} pixels", "image_too_large"
        )
    ratio = max(width, height) / min(width, height)
    if max_aspect_ratio is not None and ratio > max_aspect_ratio:
        raise MediaError(
            path,
            f"image is {width}x{height}, aspect ratio {ratio:g}:1 > {max_aspect_ratio:g}:1",
            kind="extreme_aspect_ratio",
        )


def confined_path(root: str | Path, rel: str | Path, resolve_links: bool = True) -> Path:
    """``root / rel``, if that lies inside ``root``; else `MediaError` ``path_outside_root``.

    Record-supplied names must not reach outside their media folder: ``..`` components, an
    absolute path elsewhere and (with ``resolve_links``) a symlink inside ``root`` pointing
    outside it are all refused. Both sides are compared after normalisation, so an absolute
    path that lies inside ``root`` is accepted.

    Args:
        root: the media folder.
        rel: the path the record gives (relative to ``root``, or absolute).
        resolve_links: resolve symlinks (`Path.resolve`) before comparing; without it the
            check is lexical (``os.path.normpath``), for folders that are symlink farms.

    Example:
        >>> confined_path("/data/images", "coco/1.jpg")
        PosixPath('/data/images/coco/1.jpg')
        >>> confined_path("/data/images", "../secret.jpg")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        groundinggpt.data.media.MediaError: /data/images/../secret.jpg: ... outside the media root...
    """
    path = Path(root) / rel
    if resolve_links:
        target, base = path.resolve(), Path(root).resolve()
    else:
        target = Path(os.path.normpath(os.path.abspath(path)))
        base = Path(os.path.normpath(os.path.abspath(root)))
    if not target.is_relative_to(base):
        raise MediaError(
            path, f"resolves to {target}, outside the media root {base}", "path_outside_root"
        )
    return path


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalise a channels-first float tensor in [0, 1]; channel dim is -3."""
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


# --------------------------------------------------------------------------------------- image


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    if img.mode == "F" and np.nanmax(arr, initial=0.0) <= 1.0:
        arr = arr * 255.0
    elif img.mode != "F" and (img.mode.startswith("I;16") or np.max(arr, initial=0) > 255):
        arr = arr / 257.0  # 16-bit range -> 8-bit
    arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, RGBA, P, CMYK, I;16, I, F, ...) -> RGB.

    Transparent pixels are composited onto white, since dropping alpha would expose whatever
    colour the encoder happened to store under them (often black).
    """
    if img.mode in _HIGH_DEPTH_MODES:
        img = _high_depth_to_l(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(
    path: str | Path,
    max_pixels: int | None = MAX_PIXELS,
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> Image.Image:
    """Open an image file fully (not lazily) as RGB; raises `MediaError` on bad files.

    The declared size is checked from the header first (`check_image_header`), so oversized
    or extremely elongated images are refused before their pixels are allocated.
    EXIF orientation is deliberately not applied: dataset boxes refer to the stored pixels.

    Args:
        path: the image file.
        max_pixels: most pixels accepted, or None for no limit.
        max_aspect_ratio: largest side ratio accepted, or None for no limit.
    """
    path = check_media_file(path, "image")
    with media_errors(path, "image"), Image.open(path) as img:  # lazy: reads the header only
        check_image_header(path, *img.size, max_pixels, max_aspect_ratio)
        img.load()  # a truncated file fails here, not later in a worker's resize
        rgb = to_rgb(img)
    if rgb.width == 0 or rgb.height == 0:
        raise MediaError(path, "image has zero size", kind="empty_image")
    return rgb


def expand_to_square(img: Image.Image, pad_color: Sequence[int] = PAD_COLOR) -> Image.Image:
    """Pad an RGB image to a square with ``pad_color``, the image centred (see `pad_offsets`)."""
    dx, dy, side = pad_offsets(img.width, img.height)
    if dx == 0 and dy == 0:
        return img
    square = Image.new("RGB", (side, side), tuple(int(c) for c in pad_color))
    square.paste(img, (dx, dy))
    return square


class ImageProcessor:
    """Image file -> padded, resized, CLIP-normalised tensor ``(3, size, size)``.

    The image is padded to a square first (boxes are relative to that square). The square is
    then resized and normalised here, or, when ``processor`` is given, handed to the encoder's
    own Hugging Face image processor (``CLIPImageProcessor`` for the real CLIP), so that the
    pixels match what the pretrained encoder was trained on.

    Args:
        size: output side in pixels (ignored when ``processor`` is given).
        mean: per-channel mean for normalisation (CLIP's by default).
        std: per-channel std for normalisation.
        pad_color: RGB colour of the square padding (the CLIP mean colour).
        processor: optional Hugging Face image processor called as
            ``processor(images=square, return_tensors="pt")["pixel_values"][0]``.
        max_pixels: images declaring more pixels are skipped (``image_too_large``) before
            decoding; None for no limit.
        max_aspect_ratio: images whose long side exceeds this many short sides are skipped
            (``extreme_aspect_ratio``); None for no limit.

    Example:
        >>> proc = ImageProcessor(size=64)
        >>> x = proc("images/rec_train_00000.png")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([3, 64, 64])
    """

    def __init__(
        self,
        size: int = 336,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        pad_color: Sequence[int] = PAD_COLOR,
        processor: Any | None = None,
        max_pixels: int | None = MAX_PIXELS,
        max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
    ) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if max_pixels is not None and max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive or None, got {max_pixels}")
        if max_aspect_ratio is not None and max_aspect_ratio < 1:
            raise ValueError(f"max_aspect_ratio must be >= 1 or None, got {max_aspect_ratio}")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.max_aspect_ratio = None if max_aspect_ratio is None else float(max_aspect_ratio)
        self.size = int(size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.pad_color = tuple(int(v) for v in pad_color)
        self.processor = processor

    def open(self, path: str | Path) -> Image.Image:
        """The image as RGB, within this processor's header limits; `MediaError` otherwise."""
        return open_rgb(path, self.max_pixels, self.max_aspect_ratio)

    def load_padded(self, path: str | Path) -> Image.Image:
        """The padded square at original resolution, un-normalised (for plots and checks)."""
        img = self.open(path)
        with media_errors(path, "image"):
            return expand_to_square(img, self.pad_color)

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """A PIL image (any mode) -> ``(3, size, size)`` normalised tensor."""
        square = expand_to_square(to_rgb(img), self.pad_color)
        if self.processor is not None:
            return self.processor(images=square, return_tensors="pt")["pixel_values"][0]
        resized = square.resize((self.size, self.size), Image.Resampling.BICUBIC)
        arr = np.asarray(resized, dtype=np.float32) / 255.0  # (S, S, 3)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, S, S)
        return _normalise(x, self.mean, self.std)

    def __call__(self, path: str | Path) -> torch.Tensor:
        img = self.open(path)
        with media_errors(path, "image"):  # resizing or the encoder's processor
            return self.preprocess(img)


# --------------------------------------------------------------------------------------- video


_FRAME_CHUNK = 16  # frames decoded at native resolution at once


def uniform_indices(n_total: int, num: int) -> torch.Tensor:
    """``num`` frame indices at the midpoints of ``num`` equal segments of ``n_total`` frames.

    Short videos repeat frames (the same formula, so the order stays monotonic).
    """
    if n_total <= 0 or num <= 0:
        raise ValueError(f"need positive counts, got n_total={n_total}, num={num}")
    idx = ((torch.arange(num, dtype=torch.float64) + 0.5) * n_total / num).long()
    return idx.clamp_(max=n_total - 1)


def _open_video(path: str | Path, **kwargs):
    import decord

    path = check_media_file(path, "video")
    try:
        vr = decord.VideoReader(str(path), **kwargs)
    except Exception as err:  # decord raises DECORDError / RuntimeError without a common base
        raise MediaError(path, f"unreadable video ({err})", kind="unreadable_video") from err
    if len(vr) == 0:
        raise MediaError(path, "video has no frames", kind="empty_video")
    return vr


def _frame_spans(vr) -> np.ndarray | None:
    """Per-frame ``(start, end)`` presentation times in seconds ``(n, 2)``, or None if unusable.

    Containers without timestamps (or with broken ones) give None; the caller then falls back
    to frame indices, which is exact for constant frame rate.
    """
    try:
        spans = np.asarray(vr.get_frame_timestamp(np.arange(len(vr))), dtype=np.float64)
    except Exception:  # decord has no timestamp index for some containers
        return None
    if spans.ndim != 2 or not np.isfinite(spans).all():
        return None
    if spans[-1, 1] <= spans[0, 0] or np.any(np.diff(spans[:, 0]) < 0):
        return None
    return spans.reshape(-1, 2)


def time_uniform_indices(spans: np.ndarray, num: int) -> torch.Tensor:
    """Frames shown at the midpoints of ``num`` equal *time* segments of the video.

    With constant frame rate this equals `uniform_indices`; with variable frame rate it keeps
    the sampled frames evenly spread in time, which is what ``{s, e}`` fractions refer to.

    Args:
        spans: per-frame ``(start, end)`` times, ``(n, 2)``, starts non-decreasing.
        num: frames to sample.
    """
    t0, t1 = spans[0, 0], spans[-1, 1]
    targets = t0 + (np.arange(num) + 0.5) / num * (t1 - t0)  # (num,)
    idx = np.searchsorted(spans[:, 0], targets, side="right") - 1
    return torch.from_numpy(np.clip(idx, 0, len(spans) - 1)).long()


class VideoProcessor:
    """Video file -> ``num_frames`` frames uniform in time, ``(N, 3, size, size)`` normalised.

    Frames are the ones shown at the midpoints of ``N`` equal time segments of the whole
    video (timestamps from the container, so variable frame rate is handled; constant-rate
    index sampling when the container has none). Videos with fewer than ``N`` frames repeat
    frames. Frames are resized to ``size x size`` (bicubic, antialiased; aspect ratio not kept).

    Args:
        num_frames: frames sampled over the whole video.
        size: output side in pixels.
        mean: per-channel mean for normalisation (CLIP's by default).
        std: per-channel std for normalisation.
        num_threads: decoder threads (1 keeps data-loader workers from oversubscribing cores).

    Example:
        >>> proc = VideoProcessor(num_frames=8, size=64)
        >>> proc("videos/vtg_train_00000.mp4").shape  # doctest: +SKIP
        torch.Size([8, 3, 64, 64])
    """

    def __init__(
        self,
        num_frames: int = 64,
        size: int = 224,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        num_threads: int = 1,
    ) -> None:
        if num_frames <= 0 or size <= 0:
            raise ValueError(f"num_frames and size must be positive, got {num_frames}, {size}")
        self.num_frames = int(num_frames)
        self.size = int(size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.num_threads = int(num_threads)

    def frame_indices(self, vr) -> torch.Tensor:
        """Indices of the ``num_frames`` sampled frames of an open decord reader."""
        spans = _frame_spans(vr)
        if spans is None:
            return uniform_indices(len(vr), self.num_frames)
        return time_uniform_indices(spans, self.num_frames)

    def read_frames(self, path: str | Path) -> torch.Tensor:
        """Sampled frames resized to ``size``, float in [0, 1], ``(N, 3, size, size)``.

        Resizing is done here, not by decord's ``width``/``height``, which fails for some sizes
        (e.g. 16 or 48); chunks bound the memory held at native resolution.
        """
        vr = _open_video(path, num_threads=self.num_threads)
        idx = self.frame_indices(vr).tolist()
        chunks = []
        for start in range(0, len(idx), _FRAME_CHUNK):
            try:
                raw = vr.get_batch(idx[start : start + _FRAME_CHUNK]).asnumpy()  # (n, H, W, 3)
            except Exception as err:
                raise MediaError(
                    path, f"failed to decode frames ({err})", kind="unreadable_video"
                ) from err
            chunks.append(self._resize(raw))
        return torch.cat(chunks)  # (N, 3, S, S)

    def _resize(self, frames: np.ndarray) -> torch.Tensor:
        """``(n, H, W, 3)`` uint8 -> ``(n, 3, S, S)`` float in [0, 1].

        PIL's bicubic resize (antialiased, on uint8) is about twice as fast as torch's on
        float frames and is the same filter `ImageProcessor` uses.
        """
        if frames.shape[1:3] != (self.size, self.size):
            frames = np.stack(
                [
                    np.asarray(
                        Image.fromarray(f).resize((self.size, self.size), Image.Resampling.BICUBIC)
                    )
                    for f in frames
                ]
            )
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (n, 3, S, S)

    def __call__(self, path: str | Path) -> torch.Tensor:
        with media_errors(path, "video"):
            return _normalise(self.read_frames(path), self.mean, self.std)  # (N, 3, S, S)

    def sample_times(self, path: str | Path) -> torch.Tensor:
        """Where the sampled frames sit, as fractions of the video's duration ``(N,)``."""
        vr = _open_video(path, num_threads=self.num_threads)
        idx = self.frame_indices(vr)
        spans = _frame_spans(vr)
        if spans is None:
            return (idx.double() + 0.5) / len(vr)
        t0, t1 = spans[0, 0], spans[-1, 1]
        mid = (spans[idx.numpy(), 0] + spans[idx.numpy(), 1]) / 2  # (N,)
        return torch.from_numpy((mid - t0) / (t1 - t0))

    def duration(self, path: str | Path) -> float:
        """Duration in seconds: end of the last frame, else frames / average fps."""
        vr = _open_video(path, num_threads=self.num_threads)
        spans = _frame_spans(vr)
        if spans is not None:
            return float(spans[-1, 1] - spans[0, 0])
        fps = float(vr.get_avg_fps())
        if fps > 0 and math.isfinite(fps):
            return len(vr) / fps
        raise MediaError(path, "video has neither timestamps nor a frame rate", "unreadable_video")


# --------------------------------------------------------------------------------------- audio


def _audio_failure(path: Path) -> str:
    """Why decord could not read audio from ``path``: ``no_audio_track``, ``empty_audio`` or
    ``unreadable_audio`` (asked of PyAV only after a failure, so the common path pays nothing)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return "no_audio_track"
            if not any(frame.samples for frame in container.decode(audio=0)):
                return "empty_audio"
    except Exception:  # PyAV cannot read it either
        return "unreadable_audio"
    return "unreadable_audio"


class AudioProcessor:
    """Sound file (wav, or the audio track of a video) -> log-mel clips ``(C, 1, mel, frames)``.

    Follows ImageBind: ``clips_per_sample`` clips of ``clip_duration`` seconds with start times
    evenly spread over the whole sound, each turned into a Kaldi fbank, padded/cropped to
    ``target_length`` frames and normalised with the AudioSet statistics.

    Args:
        sample_rate: decoding sample rate in Hz (the sound is resampled and mixed to mono).
        clip_duration: length of each clip in seconds; shorter sounds are zero-padded.
        clips_per_sample: number of clips ``C``.
        num_mel_bins: mel bins of the fbank.
        target_length: fbank frames per clip after padding/cropping.
        mean: normalisation mean of the log-mel values.
        std: normalisation std of the log-mel values.
        min_seconds: shortest decoded sound accepted; shorter ones are ``empty_audio``.
        silence_peak: a sound whose largest absolute sample (full scale 1.0) is below this is
            ``silent_audio``; ``0`` accepts any sound.

    Example:
        >>> proc = AudioProcessor()
        >>> proc("audio/sl_train_00000.wav").shape  # doctest: +SKIP
        torch.Size([3, 1, 128, 204])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        clip_duration: float = 2.0,
        clips_per_sample: int = 3,
        num_mel_bins: int = 128,
        target_length: int = 204,
        mean: float = -4.268,
        std: float = 9.138,
        min_seconds: float = MIN_AUDIO_SECONDS,
        silence_peak: float = SILENCE_PEAK,
    ) -> None:
        if sample_rate <= 0 or clip_duration <= 0 or clips_per_sample <= 0:
            raise ValueError("sample_rate, clip_duration and clips_per_sample must be positive")
        if min_seconds < 0 or silence_peak < 0:
            raise ValueError("min_seconds and silence_peak must be >= 0")
        self.sample_rate = int(sample_rate)
        self.clip_duration = float(clip_duration)
        self.clips_per_sample = int(clips_per_sample)
        self.num_mel_bins = int(num_mel_bins)
        self.target_length = int(target_length)
        self.mean = float(mean)
        self.std = float(std)
        self.min_seconds = float(min_seconds)
        self.silence_peak = float(silence_peak)

    def load_waveform(self, path: str | Path) -> torch.Tensor:
        """Mono waveform ``(1, T)`` at ``sample_rate``; `MediaError` if absent, empty, shorter
        than ``min_seconds`` (``empty_audio``) or silent (``silent_audio``, peak amplitude below
        ``silence_peak``)."""
        import decord

        path = check_media_file(path, "audio")
        try:
            reader = decord.AudioReader(str(path), sample_rate=self.sample_rate, mono=True)
            samples = reader[:].asnumpy()
        except Exception as err:  # no audio stream, corrupt file, zero samples
            raise MediaError(
                path, f"no decodable audio ({err})", kind=_audio_failure(path)
            ) from err
        if samples.size == 0:
            raise MediaError(path, "audio has no samples", kind="empty_audio")
        min_samples = math.ceil(self.min_seconds * self.sample_rate)
        if samples.size < min_samples:
            seconds = samples.size / self.sample_rate
            raise MediaError(
                path,
                f"audio is {seconds:.4f} s ({samples.size} samples), shorter than "
                f"{self.min_seconds} s",
                kind="empty_audio",
            )
        peak = float(np.abs(samples).max())
        if peak < self.silence_peak:
            raise MediaError(
                path,
                f"audio is silent (peak amplitude {peak:.2e} < {self.silence_peak:.0e})",
                kind="silent_audio",
            )
        return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).reshape(1, -1)

    def clip_starts(self, duration: float) -> list[float]:
        """Clip start times (s): ``linspace(0, max(duration - clip_duration, 0), C)``."""
        last = max(duration - self.clip_duration, 0.0)
        return torch.linspace(0.0, last, self.clips_per_sample, dtype=torch.float64).tolist()

    def _melspec(self, clip: torch.Tensor) -> torch.Tensor:
        from torchaudio.compliance import kaldi

        clip = clip - clip.mean()  # (1, L); DC offset would leak into the lowest mel bins
        fbank = kaldi.fbank(
            clip,
            htk_compat=True,
            sample_frequency=self.sample_rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=self.num_mel_bins,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        ).transpose(0, 1)  # (mel, frames)
        n = fbank.shape[1]
        if n < self.target_length:
            fbank = torch.nn.functional.pad(fbank, (0, self.target_length - n))
        return fbank[:, : self.target_length]  # (mel, target_length)

    def __call__(self, path: str | Path) -> torch.Tensor:
        with media_errors(path, "audio"):
            return self._log_mel_clips(path)

    def _log_mel_clips(self, path: str | Path) -> torch.Tensor:
        wave = self.load_waveform(path)  # (1, T)
        clip_len = round(self.clip_duration * self.sample_rate)
        clips = []
        for start in self.clip_starts(wave.shape[1] / self.sample_rate):
            s = round(start * self.sample_rate)
            clip = wave[:, s : s + clip_len]
            if clip.shape[1] < clip_len:
                clip = torch.nn.functional.pad(clip, (0, clip_len - clip.shape[1]))
            clips.append(self._melspec(clip))  # (mel, target_length)
        mel = torch.stack(clips).unsqueeze(1)  # (C, 1, mel, target_length)
        return (mel - self.mean) / self.std
