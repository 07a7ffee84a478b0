"""Sounds that decode to (near) nothing are skipped instead of training as silence:
too short (``empty_audio``) or all but zero (``silent_audio``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.data.conftest import SR, write_audio, write_mp4, write_records, write_wav

from groundinggpt.data.conversation import ConversationFormatter
from groundinggpt.data.dataset import ConversationDataset
from groundinggpt.data.media import MIN_AUDIO_SECONDS, SILENCE_PEAK, AudioProcessor, MediaError
from groundinggpt.data.synthetic.writers import tone
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.modalities import SPECIAL_TOKENS, modality_specs


def _sine(seconds: float, amp: float, hz: float = 440.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * hz * np.arange(round(seconds * SR)) / SR)


def _kind(path: Path) -> str:
    with pytest.raises(MediaError, match=path.name) as err:
        AudioProcessor()(path)
    return err.value.kind


@pytest.mark.parametrize(
    ("samples", "kind"),
    [
        (np.zeros(3 * SR), "silent_audio"),
        (np.full(3 * SR, 0.5 * SILENCE_PEAK), "silent_audio"),  # rounds to 1 LSB of 16-bit PCM
        (np.zeros(1), "empty_audio"),  # a 1-sample wav
        (np.zeros(10), "empty_audio"),
        (_sine(0.05, 0.5), "empty_audio"),  # loud but only 50 ms
    ],
    ids=["zeros", "below-peak", "one-sample", "ten-samples", "50ms-tone"],
)
def test_silent_or_too_short_wav_is_skipped(tmp_path: Path, samples, kind: str) -> None:
    assert _kind(write_wav(tmp_path / "s.wav", samples)) == kind


def test_silent_mp3_flac_and_video_track_are_skipped(tmp_path: Path) -> None:
    silence = np.zeros(2 * SR)
    assert _kind(write_audio(tmp_path / "s.mp3", silence)) == "silent_audio"
    assert _kind(write_audio(tmp_path / "s.flac", silence)) == "silent_audio"
    assert _kind(write_mp4(tmp_path / "s.mp4", 8, audio=silence)) == "silent_audio"


@pytest.mark.parametrize(
    "samples",
    [
        _sine(MIN_AUDIO_SECONDS, 0.5),  # exactly the shortest accepted length
        _sine(2.0, 1e-3),  # quiet (-60 dBFS) but a real sound
        np.r_[np.zeros(3 * SR), _sine(0.2, 0.3)],  # long silence, then a short sound
    ],
    ids=["100ms", "quiet", "late-onset"],
)
def test_short_or_quiet_real_sounds_are_kept(tmp_path: Path, samples) -> None:
    x = AudioProcessor()(write_wav(tmp_path / "ok.wav", samples))
    assert x.shape == (3, 1, 128, 204) and torch.isfinite(x).all()


def test_synthetic_tones_are_never_affected(tmp_path: Path) -> None:
    """The generator's tones: 2-4 s, amplitude 0.3-0.6 plus noise (tasks.Params.audio_seconds,
    writers.tone); the quietest and shortest one is far above both limits."""
    rng = np.random.default_rng(0)
    for i, (hz, seconds) in enumerate([(200.0, 2.0), (3000.0, 2.0), (800.0, 4.0)]):
        samples = tone(rng, hz, seconds, SR)
        assert np.abs(samples).max() > 100 * SILENCE_PEAK
        wave_ = AudioProcessor().load_waveform(write_wav(tmp_path / f"t{i}.wav", samples))
        assert wave_.shape[1] == round(seconds * SR)


def test_limits_are_configurable(tmp_path: Path) -> None:
    quiet = write_wav(tmp_path / "q.wav", np.zeros(SR // 20))
    assert AudioProcessor(min_seconds=0, silence_peak=0).load_waveform(quiet).shape == (1, SR // 20)
    with pytest.raises(ValueError, match="min_seconds"):
        AudioProcessor(min_seconds=-1.0)


def test_dataset_counts_silent_audio_as_a_skip(tmp_path: Path) -> None:
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    fmt = ConversationFormatter(tok, modality_specs({"audio": 2}))
    write_wav(tmp_path / "silent.wav", np.zeros(2 * SR))
    write_wav(tmp_path / "tone.wav", _sine(2.0, 0.3))
    conv = [{"from": "human", "value": "<sound>\nwhat is it"}, {"from": "gpt", "value": "a tone"}]
    ann = write_records(
        tmp_path / "a.json",
        [
            {"id": "s", "sound": "silent.wav", "conversations": conv},
            {"id": "t", "sound": "tone.wav", "conversations": conv},
        ],
    )
    ds = ConversationDataset(ann, tmp_path, fmt, {"audio": AudioProcessor()}, 256)
    assert ds[0]["skipped"] == "silent_audio"
    assert ds[1]["media"]["audio"].shape == (3, 1, 128, 204)
