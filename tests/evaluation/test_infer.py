"""infer.py: answers about a photo, an mp4 with sound and a wav; pixels/seconds; pictures; chat."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter
from tests.conftest import compose_config

from groundinggpt.build import build_model
from groundinggpt.data.synthetic.writers import write_mp4, write_wav
from groundinggpt.evaluation import inference
from groundinggpt.evaluation.inference import GroundingChat, chat_loop, describe, infer
from groundinggpt.grounding.geometry import box_from_padded
from groundinggpt.utils.visualize import draw_boxes

SR = 16000
PHOTO_SIZE = (160, 100)  # landscape: padding above and below inside the model
VIDEO_SECONDS = 3.0


# ------------------------------------------------------------------------------- media files


def _photo(path: Path) -> Path:
    """A small landscape: sky gradient, sun, hills, a house, sensor noise; saved as JPEG."""
    w, h = PHOTO_SIZE
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (np.array([90, 150, 230]) * (1 - y) + np.array([200, 220, 240]) * y).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).copy())
    draw = ImageDraw.Draw(img)
    draw.ellipse((120, 10, 145, 35), fill=(250, 220, 80))
    draw.polygon(
        [(0, 70), (50, 50), (110, 68), (160, 55), (160, 100), (0, 100)], fill=(60, 140, 60)
    )
    draw.rectangle((30, 55, 60, 80), fill=(170, 80, 60))
    draw.polygon([(26, 56), (45, 40), (64, 56)], fill=(120, 40, 40))
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    noise = np.random.default_rng(0).normal(0, 6, (h, w, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _mp4_with_sound(path: Path, fps: int = 8) -> Path:
    """A blue ball crossing a grey scene, with a tone on the sound track (mpeg4 + aac)."""
    w, h = 64, 48
    n = int(VIDEO_SECONDS * fps)
    frames = []
    for i in range(n):
        img = Image.new("RGB", (w, h), (110, 110, 120))
        x = int(4 + (w - 20) * i / max(n - 1, 1))
        ImageDraw.Draw(img).ellipse((x, 16, x + 14, 30), fill=(30, 60, 220))
        frames.append(np.asarray(img))
    write_mp4(path, np.stack(frames), fps, audio=_tone(VIDEO_SECONDS), sample_rate=SR)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    wav = write_wav(root / "tone.wav", _tone(2.5, 660.0), SR)
    return {
        "photo": _photo(root / "photo.jpg"),
        "mp4": _mp4_with_sound(root / "ball.mp4"),
        "wav": wav,
    }


@pytest.fixture(scope="module")
def ckpt(tiny_weights) -> Path:
    """The tiny model's random weights saved as a Lightning-style checkpoint."""
    return tiny_weights.ckpt


def _cfg(tmp_path: Path, ckpt: Path, **kwargs):
    overrides = [
        f"ckpt_path={ckpt}",
        "assistant.device=cpu",
        "assistant.generation.max_new_tokens=8",
    ]
    overrides += [f"{k}={v}" for k, v in kwargs.items()]
    return compose_config(overrides, tmp_path, tmp_path / "run", config_name="infer")


@pytest.fixture()
def chat(tmp_path, ckpt) -> GroundingChat:
    cfg = _cfg(tmp_path, ckpt)
    model, tokenizer = build_model(cfg, "ckpt_path")
    return hydra.utils.instantiate(cfg.assistant, model=model, tokenizer=tokenizer)


def _red_pixels(arr: np.ndarray) -> int:
    return int(((arr[..., 0] > 200) & (arr[..., 1] < 60) & (arr[..., 2] < 60)).sum())


def _force_answer(monkeypatch, text: str) -> None:
    """Make generation return ``text`` (a trained model's answer), to check the grounding path."""

    def tokens(model, tokenizer, *args, **kwargs):
        return tokenizer([text], add_special_tokens=False, return_tensors="pt").input_ids

    monkeypatch.setattr(inference, "generate_tokens", tokens)


# ------------------------------------------------------------------------------------- tests


def test_photo_answer_is_printed_with_a_picture(tmp_path, ckpt, media, capsys) -> None:
    answer = infer(_cfg(tmp_path, ckpt, prompt="'Where is the house?'", image=media["photo"]))
    out = capsys.readouterr().out
    assert f"answer: {answer.text}" in out
    picture = Image.open(tmp_path / "run" / "answer.png")
    w, h = PHOTO_SIZE  # the photo itself (boxes drawn on it), the raw answer in a band below
    assert picture.width == w and picture.height > h


def test_an_answer_without_a_box_says_so_in_print_and_picture(
    tmp_path, ckpt, media, monkeypatch, capsys
) -> None:
    _force_answer(monkeypatch, "[.00, 0.530, 0.4300]")  # what a half-trained model wrote
    answer = infer(_cfg(tmp_path, ckpt, prompt="'Where is the house?'", image=media["photo"]))
    assert answer.boxes == []
    assert "(no box [x0, y0, x1, y1] could be parsed from the answer)" in capsys.readouterr().out
    drawn = np.asarray(Image.open(tmp_path / "run" / "answer.png").convert("RGB")).astype(int)
    plain = np.asarray(Image.open(media["photo"]).convert("RGB")).astype(int)
    h = plain.shape[0]
    assert np.array_equal(drawn[:h], plain)  # nothing drawn on the photo ...
    assert _red_pixels(drawn[h:]) > 20  # ... and the red note under it says why
    assert (drawn[h:] < 100).all(axis=-1).sum() > 20  # the raw answer, in black


def test_boxes_come_back_in_pixels_and_are_drawn(tmp_path, ckpt, media, monkeypatch, capsys):
    _force_answer(monkeypatch, "It is here: [0.150, 0.300, 0.400, 0.550].")
    answer = infer(_cfg(tmp_path, ckpt, prompt="'Where is the house?'", image=media["photo"]))
    w, h = PHOTO_SIZE  # side 160, the photo sits 30 px below the top of the padded square
    assert answer.boxes == [pytest.approx((24.0, 18.0, 64.0, 58.0))]
    assert answer.boxes[0] == pytest.approx(box_from_padded((0.15, 0.3, 0.4, 0.55), w, h))
    assert "box 1 (pixels, x0 y0 x1 y1): 24.0 18.0 64.0 58.0" in capsys.readouterr().out
    drawn = np.asarray(Image.open(tmp_path / "run" / "answer.png")).astype(int)
    plain = np.asarray(Image.open(media["photo"]).convert("RGB")).astype(int)
    assert _red_pixels(drawn[18:58, 24:26]) == 80  # left edge, 2 px wide
    assert _red_pixels(drawn[18:20, 24:64]) == 80  # top edge
    assert _red_pixels(plain) == 0
    assert np.array_equal(drawn[70:h, 90:], plain[70:, 90:])  # far from the box: untouched
    assert np.array_equal(drawn[32:50, 35:55], plain[32:50, 35:55])  # inside: not filled


def test_video_with_sound_spans_in_seconds(tmp_path, ckpt, media, monkeypatch, capsys) -> None:
    cfg = _cfg(
        tmp_path, ckpt, prompt="'When does the ball cross?'", video=media["mp4"], audio=media["mp4"]
    )
    real = infer(cfg)  # the real model on the real video + its sound track
    assert isinstance(real.text, str)
    plain = np.asarray(Image.open(tmp_path / "run" / "answer.png").convert("RGB")).astype(int)
    _force_answer(monkeypatch, "{0.25, 0.75}")
    answer = infer(cfg)
    assert answer.spans == [pytest.approx((0.75, 2.25), abs=0.05)]  # 3 s video
    assert "span 1 (seconds): 0.75 - 2.25" in capsys.readouterr().out
    drawn = np.asarray(Image.open(tmp_path / "run" / "answer.png").convert("RGB")).astype(int)
    if not real.spans:  # no span parsed: only the red note; the span bar adds far more red
        assert _red_pixels(drawn) > _red_pixels(plain) + 200
    else:
        assert _red_pixels(drawn) > 200  # the span bar


def test_wav_answer_and_timeline(tmp_path, ckpt, media, monkeypatch) -> None:
    _force_answer(monkeypatch, "The tone plays during {0.00, 0.40}.")
    answer = infer(_cfg(tmp_path, ckpt, prompt="'When is the tone?'", audio=media["wav"]))
    assert answer.spans == [pytest.approx((0.0, 1.0), abs=0.01)]  # 2.5 s of sound
    assert (tmp_path / "run" / "answer.png").stat().st_size > 0


def test_chat_keeps_the_conversation(chat, media, tmp_path, capsys) -> None:
    chat.set_media(image=str(media["photo"]))
    turns = chat_loop(chat, tmp_path, ["Where is the house?", "And the sun?", "exit", "unused"])
    assert turns == 2
    assert [t["from"] for t in chat.history] == ["human", "gpt", "human", "gpt"]
    assert chat.history[0]["value"].startswith("<image>\n")  # placeholder once, first turn
    assert "<image>" not in chat.history[2]["value"]
    # The second prompt is the whole first exchange followed by the new question.
    first = chat.formatter.encode(chat.history[:2])[0]
    second = chat.formatter.prompt_ids(chat.history[:3])
    assert second[: len(first)] == first and len(second) > len(first)
    assert (tmp_path / "answer_01.png").is_file() and (tmp_path / "answer_02.png").is_file()
    assert capsys.readouterr().out.count("answer:") == 2


def test_chat_reset_and_bad_prompts(chat, media, tmp_path) -> None:
    chat.set_media(image=str(media["photo"]))
    chat_loop(chat, tmp_path, ["Where is the house?", "/reset", "Where is the sun?", ""])
    assert len(chat.history) == 2 and chat.history[0]["value"].endswith("Where is the sun?")
    with pytest.raises(ValueError, match="first question"):
        chat.ask("<image>\nAgain?")
    chat.reset()
    with pytest.raises(ValueError, match="not given"):
        chat.ask("<video>\nWhen?")


def test_text_only_prompt_has_no_picture(chat, tmp_path) -> None:
    chat.set_media()
    answer = chat.ask("Say a box.")
    assert chat.save_picture(answer, tmp_path / "a.png") is None
    assert describe(answer, False, False).startswith("answer:")


def test_missing_media_is_a_clear_error(chat, tmp_path) -> None:
    from groundinggpt.data.media import MediaError

    with pytest.raises(MediaError, match="not found"):
        chat.set_media(image=str(tmp_path / "nope.jpg"))


def test_draw_boxes_is_exact() -> None:
    img = Image.new("RGB", (50, 40), (0, 0, 0))
    arr = np.asarray(draw_boxes(img, [(10, 5, 30, 25)]))
    assert arr[5, 20].tolist() == [255, 0, 0] and arr[24, 20].tolist() == [255, 0, 0]
    assert arr[15, 20].tolist() == [0, 0, 0] and arr[35, 45].tolist() == [0, 0, 0]


def test_infer_needs_a_prompt(tmp_path, ckpt) -> None:
    with pytest.raises(ValueError, match="prompt="):
        infer(_cfg(tmp_path, ckpt))


def test_bfloat16_weights_and_media(tmp_path, ckpt, media) -> None:
    cfg = _cfg(tmp_path, ckpt, **{"assistant.dtype": "bfloat16"})
    model, tokenizer = build_model(cfg, "ckpt_path")
    chat = hydra.utils.instantiate(cfg.assistant, model=model, tokenizer=tokenizer)
    chat.set_media(image=str(media["photo"]))
    assert next(chat.model.parameters()).dtype == torch.bfloat16
    assert chat.features["image"].dtype == torch.bfloat16
    assert isinstance(chat.ask("Where is the house?").text, str)


def test_a_region_prompt_without_a_box_is_refused_clearly(chat, media) -> None:
    chat.set_media(image=media["photo"])
    with pytest.raises(ValueError, match="needs its box"):
        chat.ask("What is in <region>?")
    assert chat.history == []  # nothing half-remembered
