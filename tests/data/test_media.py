from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tests.data.conftest import SR, write_mp4, write_wav

from groundinggpt.data.media import (
    PAD_COLOR,
    AudioProcessor,
    ImageProcessor,
    MediaError,
    VideoProcessor,
    uniform_indices,
)
from groundinggpt.grounding.geometry import box_from_padded, box_to_padded, pad_offsets

# ------------------------------------------------------------------------------------- image


def _image_in_mode(mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (30, 50), dtype=np.uint16))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "CMYK", "I;16", "I", "F"])
def test_image_modes_load_to_normalised_rgb(tmp_path: Path, mode: str) -> None:
    img = _image_in_mode(mode)
    path = tmp_path / ("img.tiff" if mode in ("CMYK", "F", "I") else "img.png")
    img.save(path)
    assert Image.open(path).mode == mode
    x = ImageProcessor(size=24)(path)
    assert x.shape == (3, 24, 24)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


def test_sixteen_bit_keeps_its_range(tmp_path: Path) -> None:
    """A mid-grey 16-bit image must stay mid-grey, not be clipped to white."""
    Image.fromarray(np.full((10, 10), 32768, np.uint16)).save(tmp_path / "g.png")
    padded = ImageProcessor().load_padded(tmp_path / "g.png")
    assert 120 <= np.asarray(padded)[5, 5, 0] <= 135


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(ImageProcessor().load_padded(tmp_path / "t.png"))[4, 4].tolist() == [255] * 3


def test_padding_centres_the_image(tmp_path: Path) -> None:
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "wide.png")
    padded = np.asarray(ImageProcessor().load_padded(tmp_path / "wide.png"))
    assert padded.shape == (40, 40, 3)
    assert pad_offsets(40, 20) == (0, 10, 40)
    assert padded[5, 20].tolist() == list(PAD_COLOR)  # above the image
    assert padded[20, 20].tolist() == [255, 0, 0]
    assert padded[35, 20].tolist() == list(PAD_COLOR)  # below the image


def test_normalisation_of_pad_colour_is_near_zero(tmp_path: Path) -> None:
    Image.new("RGB", (10, 10), PAD_COLOR).save(tmp_path / "m.png")
    assert ImageProcessor(size=8)(tmp_path / "m.png").abs().max() < 0.02  # within 1 grey level


@pytest.mark.parametrize(("w", "h"), [(80, 50), (50, 80), (64, 64), (101, 64)])
def test_known_box_round_trips(w: int, h: int) -> None:
    box = (10.0, 5.0, 40.0, 30.0)
    rel = box_to_padded(box, w, h)
    assert all(0.0 <= v <= 1.0 for v in rel)
    rounded = [round(v, 3) for v in rel]  # the text format keeps 3 decimals
    assert np.allclose(box_from_padded(rounded, w, h), box, atol=1.0)


@settings(max_examples=50, deadline=None)
@given(
    w=st.integers(1, 2000),
    h=st.integers(1, 2000),
    fr=st.tuples(*[st.floats(0, 1)] * 4),
)
def test_box_round_trip_property(w: int, h: int, fr: tuple[float, ...]) -> None:
    box = (fr[0] * w, fr[1] * h, fr[2] * w, fr[3] * h)
    assert np.allclose(box_from_padded(box_to_padded(box, w, h), w, h), box, atol=1e-6)


def test_box_from_padded_clips_to_image() -> None:
    assert box_from_padded((0.0, 0.0, 1.0, 1.0), 40, 20) == (0.0, 0.0, 40.0, 20.0)


def test_box_in_padded_square_lands_on_the_drawn_pixels(tmp_path: Path) -> None:
    canvas = np.full((30, 70, 3), 200, np.uint8)
    canvas[5:15, 40:60] = (255, 0, 0)
    Image.fromarray(canvas).save(tmp_path / "b.png")
    padded = np.asarray(ImageProcessor().load_padded(tmp_path / "b.png"))
    x0, y0, x1, y1 = (v * padded.shape[0] for v in box_to_padded((40, 5, 60, 15), 70, 30))
    assert padded[int((y0 + y1) / 2), int((x0 + x1) / 2)].tolist() == [255, 0, 0]
    assert padded[int(y0) - 1, int(x0)].tolist() != [255, 0, 0]


@pytest.mark.parametrize("content", [None, b"", b"not an image at all"])
def test_bad_image_raises_media_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match="bad.png"):
        ImageProcessor()(path)


# ------------------------------------------------------------------------------------- video


def test_uniform_indices_are_segment_midpoints() -> None:
    assert uniform_indices(10, 4).tolist() == [1, 3, 6, 8]
    short = uniform_indices(3, 8)
    assert short.tolist() == sorted(short.tolist()) and set(short.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("n_frames", [5, 20])
def test_video_samples_uniform_frames(tmp_path: Path, n_frames: int) -> None:
    path = write_mp4(tmp_path / "v.mp4", n_frames)
    proc = VideoProcessor(num_frames=8, size=16, mean=(0, 0, 0), std=(1, 1, 1))
    x = proc(path)
    assert x.shape == (8, 3, 16, 16) and torch.isfinite(x).all()
    grey = (x[:, 0, 8, 8] * 255).round()  # (N,) flat grey encodes the frame index
    decoded = ((grey - 4) / 8).round().long()
    assert decoded.tolist() == uniform_indices(n_frames, 8).tolist()


def test_video_duration(tmp_path: Path) -> None:
    assert VideoProcessor().duration(write_mp4(tmp_path / "v.mp4", 20, fps=8)) == pytest.approx(2.5)


def test_missing_or_corrupt_video_raises(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        VideoProcessor()(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00junk" * 10)
    with pytest.raises(MediaError, match="junk.mp4"):
        VideoProcessor()(tmp_path / "junk.mp4")


# ------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    "samples",
    [
        0.5 * np.sin(2 * np.pi * 440 * np.arange(SR // 2) / SR),  # shorter than one clip
        0.3 * np.sin(2 * np.pi * 1000 * np.arange(10 * SR) / SR),  # longer than all clips
    ],
    ids=["short", "long"],
)  # silent and too-short sounds are skipped: tests/data/test_silent_audio.py
def test_wav_gives_finite_clips(tmp_path: Path, samples: np.ndarray) -> None:
    x = AudioProcessor()(write_wav(tmp_path / "a.wav", samples))
    assert x.shape == (3, 1, 128, 204)
    assert torch.isfinite(x).all()


def test_audio_is_resampled_to_16k(tmp_path: Path) -> None:
    samples = 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * 44100) / 44100)
    wave_ = AudioProcessor().load_waveform(write_wav(tmp_path / "a.wav", samples, 44100))
    assert wave_.shape == (1, 2 * SR)


def test_clip_starts_spread_over_the_sound() -> None:
    proc = AudioProcessor()
    assert proc.clip_starts(10.0) == pytest.approx([0.0, 4.0, 8.0])
    assert proc.clip_starts(1.0) == [0.0, 0.0, 0.0]


def test_pitch_moves_the_mel_peak(tmp_path: Path) -> None:
    peaks = []
    for hz in (300, 1200, 4000):
        path = write_wav(
            tmp_path / f"{hz}.wav", 0.5 * np.sin(2 * np.pi * hz * np.arange(SR * 2) / SR)
        )
        peaks.append(int(AudioProcessor()(path)[0, 0, :, 50].argmax()))
    assert peaks[0] < peaks[1] < peaks[2]


def test_audio_track_of_mp4(tmp_path: Path) -> None:
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)
    x = AudioProcessor()(write_mp4(tmp_path / "with.mp4", 8, audio=tone))
    assert x.shape == (3, 1, 128, 204) and torch.isfinite(x).all()
    with pytest.raises(MediaError, match="without.mp4"):
        AudioProcessor()(write_mp4(tmp_path / "without.mp4", 8))


@pytest.mark.parametrize("content", [None, b"", b"RIFFjunk", "zero-samples"])
def test_bad_audio_raises_media_error(tmp_path: Path, content: bytes | str | None) -> None:
    path = tmp_path / "bad.wav"
    if content == "zero-samples":
        write_wav(path, np.zeros(0))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match="bad.wav"):
        AudioProcessor()(path)


def test_media_error_is_a_value_error() -> None:
    err = MediaError("x.png", "file not found")
    assert isinstance(err, ValueError) and err.path == "x.png" and "file not found" in str(err)


# ------------------------------------------------------------------- robustness (issue 3)


def test_variable_frame_rate_samples_uniformly_in_time(tmp_path: Path, files) -> None:
    """8 fast frames (0.2 s) then 8 slow ones (1.7 s): time-uniform sampling lands on the
    slow frames, where index-uniform sampling would spend half the frames on 0.2 s."""
    path = files.mp4(tmp_path / "vfr.mp4", 16, frame_ms=[25] * 8 + [225] * 8)
    proc = VideoProcessor(num_frames=4, size=8, mean=(0, 0, 0), std=(1, 1, 1))
    grey = (proc(path)[:, 0, 4, 4] * 255).round()  # (N,) flat grey encodes the frame index
    assert ((grey - 4) / 8).round().long().tolist() == [8, 10, 12, 14]
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]
    times = proc.sample_times(path)
    assert times.tolist() == sorted(times.tolist()) and 0 < times[0] < times[-1] < 1
    assert proc.duration(path) == pytest.approx(1.9, abs=0.15)


def test_video_shorter_than_num_frames_repeats_frames(tmp_path: Path, files) -> None:
    path = files.mp4(tmp_path / "short.mp4", 3)
    proc = VideoProcessor(num_frames=64, size=8, mean=(0, 0, 0), std=(1, 1, 1))
    x = proc(path)
    assert x.shape == (64, 3, 8, 8)
    decoded = (((x[:, 0, 4, 4] * 255).round() - 4) / 8).round().long()
    assert decoded.tolist() == sorted(decoded.tolist()) and set(decoded.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3"])
def test_audio_formats_give_the_same_clips(tmp_path: Path, files, suffix: str) -> None:
    tone = 0.4 * np.sin(2 * np.pi * 660 * np.arange(3 * SR) / SR)
    writer = files.wav if suffix == ".wav" else files.audio
    x = AudioProcessor()(writer(tmp_path / f"t{suffix}", tone))
    reference = AudioProcessor()(files.wav(tmp_path / "ref.wav", tone))
    assert x.shape == (3, 1, 128, 204)
    # Same pitch peak whatever the codec (mp3 adds an encoder delay, so compare the peak).
    assert int(x[1, 0, :, 100].argmax()) == int(reference[1, 0, :, 100].argmax())


def test_empty_and_trackless_audio_have_their_own_reasons(tmp_path: Path, files) -> None:
    with pytest.raises(MediaError) as err:
        AudioProcessor()(files.wav(tmp_path / "e.wav", np.zeros(0)))
    assert err.value.kind == "empty_audio"
    with pytest.raises(MediaError) as err:
        AudioProcessor()(files.mp4(tmp_path / "mute.mp4", 4))
    assert err.value.kind == "no_audio_track"


def test_truncated_and_empty_media_are_media_errors(tmp_path: Path, files) -> None:
    files.image(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(MediaError) as err:
        ImageProcessor()(tmp_path / "cut.png")
    assert err.value.kind == "unreadable_image"
    with pytest.raises(MediaError) as err:
        VideoProcessor()(tmp_path / "zero.mp4")
    assert err.value.kind == "empty_video"


def test_encoder_processor_gets_the_padded_square(tmp_path: Path) -> None:
    """With the real CLIP preprocessing the pad colour still normalises to ~0 and the image
    content sits where the padding put it."""
    from transformers import CLIPImageProcessor

    Image.new("RGB", (60, 20), (255, 0, 0)).save(tmp_path / "wide.png")
    hf = CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    x = ImageProcessor(processor=hf)(tmp_path / "wide.png")  # (3, 48, 48)
    assert x.shape == (3, 48, 48)
    assert x[:, 2, 24].abs().max() < 0.05  # top padding = CLIP mean colour
    assert x[0, 24, 24] > 1.5 and x[1, 24, 24] < -1.0  # red centre, normalised
    own = ImageProcessor(size=48)(tmp_path / "wide.png")
    assert torch.allclose(x, own, atol=0.1)  # both pipelines agree up to resampling


def test_known_box_round_trips_through_padding_text_and_back(tmp_path: Path) -> None:
    """An object drawn at a known pixel box: pad -> relative box -> text -> parse -> pixels,
    within one pixel, and the box drawn on the processed tensor covers the object."""
    from groundinggpt.grounding.format import format_box, parse_box

    w, h, box = 173, 97, (31, 12, 88, 70)
    canvas = np.full((h, w, 3), 30, np.uint8)
    canvas[box[1] : box[3], box[0] : box[2]] = (250, 250, 250)
    Image.fromarray(canvas).save(tmp_path / "obj.png")
    text = format_box(box_to_padded(box, w, h))
    back = box_from_padded(parse_box(text), w, h)
    assert np.allclose(back, box, atol=1.0), (text, back)
    proc = ImageProcessor(size=64, mean=(0, 0, 0), std=(1, 1, 1))
    x = proc(tmp_path / "obj.png")[0]  # (64, 64) red channel in [0, 1]
    x0, y0, x1, y1 = (round(v * 64) for v in parse_box(text))
    assert x[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].min() > 0.9  # inside: the object
    assert x[y1 + 2, x0 + 1 : x1 - 1].max() < 0.3  # just below: background


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp4"])
def test_truncated_audio_keeps_the_readable_part_or_is_a_media_error(
    tmp_path: Path, files, suffix: str
) -> None:
    """A cut wav/flac still holds decodable samples (used, finite); a cut mp4 loses its index
    and is unreadable. Neither crashes nor yields NaN."""
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * SR) / SR)
    path = {
        ".wav": lambda p: files.wav(p, tone),
        ".flac": lambda p: files.audio(p, tone),
        ".mp4": lambda p: files.mp4(p, 8, audio=tone),
    }[suffix](tmp_path / f"t{suffix}")
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 3])
    if suffix == ".mp4":
        with pytest.raises(MediaError) as err:
            AudioProcessor()(cut)
        assert err.value.kind == "unreadable_audio"
    else:
        n = AudioProcessor().load_waveform(cut).shape[1]
        assert 0 < n < 3 * SR
        assert torch.isfinite(AudioProcessor()(cut)).all()


class _NoTimestamps:
    """A decord-like reader whose container has no usable timestamps."""

    def __len__(self) -> int:
        return 10

    def get_frame_timestamp(self, idx):
        raise RuntimeError("no index")

    def get_avg_fps(self) -> float:
        return 5.0


def test_missing_timestamps_fall_back_to_frame_indices(monkeypatch) -> None:
    proc = VideoProcessor(num_frames=4, size=8)
    assert proc.frame_indices(_NoTimestamps()).tolist() == uniform_indices(10, 4).tolist()
    monkeypatch.setattr("groundinggpt.data.media._open_video", lambda *a, **k: _NoTimestamps())
    assert proc.duration("any.mp4") == pytest.approx(2.0)  # 10 frames at 5 fps
    assert proc.sample_times("any.mp4").tolist() == pytest.approx([0.15, 0.35, 0.65, 0.85])
