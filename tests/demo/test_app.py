"""The web demo's handlers (no browser): answers with pictures, separate sessions, bad files."""

from __future__ import annotations

import pytest
from PIL import Image

from groundinggpt.demo import DemoBackend, build_app, find_examples

gr = pytest.importorskip("gradio", reason="the web demo needs gradio: pip install -e '.[demo]'")


def test_answer_and_picture_for_a_synthetic_image(chat_factory, synthetic_image, tmp_path):
    backend = DemoBackend(chat_factory, tmp_path)
    reply = backend.ask("Where is the blue triangle?", str(synthetic_image), None, None, None)
    assert not reply.error, reply.status
    assert reply.answer.startswith("answer: ")
    # Random weights: no box in the answer, and the text says so.
    assert "box" in reply.answer
    assert isinstance(reply.picture, Image.Image)
    w, h = Image.open(synthetic_image).size
    assert reply.picture.width == w and reply.picture.height > h  # the answer band under it
    assert [m["role"] for m in reply.messages] == ["user", "assistant"]
    assert reply.messages[0]["content"] == "Where is the blue triangle?"

    again = backend.ask("And the other one?", str(synthetic_image), None, None, reply.session)
    assert again.session is reply.session and len(again.messages) == 4
    assert len(again.session.chat.history) == 4  # multi-turn: the first turn is in the prompt
    reset = backend.reset(again.session)
    assert reset.messages == [] and reset.session.chat.history == []
    assert reset.session.chat.features  # the media stay encoded


def test_sessions_keep_separate_histories(chat_factory, synthetic_image, tiny_data_dir, tmp_path):
    backend = DemoBackend(chat_factory, tmp_path)
    video = str(sorted((tiny_data_dir / "videos").glob("vtg_test_*.mp4"))[0])
    a = backend.ask("Where is it?", str(synthetic_image), None, None, None)
    b = backend.ask("When does it appear?", None, video, None, None)
    a = backend.ask("Are you sure?", str(synthetic_image), None, None, a.session)
    assert a.session is not b.session and a.session.chat is not b.session.chat
    assert a.session.chat.model is b.session.chat.model  # one model, shared
    assert [m["content"] for m in a.messages if m["role"] == "user"] == [
        "Where is it?",
        "Are you sure?",
    ]
    assert [m["content"] for m in b.messages if m["role"] == "user"] == ["When does it appear?"]
    assert "span" in b.answer and b.picture is not None  # a timeline for the video
    # New media in a session start a new conversation there only.
    c = backend.ask("What about this one?", None, video, None, a.session)
    assert len(c.messages) == 2 and len(b.messages) == 2


def test_broken_file_gives_a_clear_message(chat_factory, broken_image, synthetic_image, tmp_path):
    backend = DemoBackend(chat_factory, tmp_path)
    reply = backend.load_media(str(broken_image), None, None, None)
    assert reply.error and reply.picture is None
    assert reply.status.startswith("Could not read the image file broken.png: ")
    asked = backend.ask("Where?", str(broken_image), None, None, reply.session)
    assert asked.error and "broken.png" in asked.status and asked.messages == []
    missing = backend.ask("Where?", None, str(tmp_path / "gone.mp4"), None, None)
    assert missing.error and "video file gone.mp4" in missing.status
    # A question the model cannot take is an error line too, not an exception.
    good = backend.ask("<image>\nWhere?", str(synthetic_image), None, None, None)
    late = backend.ask("<image>\nAgain?", str(synthetic_image), None, None, good.session)
    assert late.error and late.status.startswith("Could not answer: media placeholders")
    # The session recovers with a good file.
    good = backend.ask("Where?", str(synthetic_image), None, None, reply.session)
    assert not good.error and len(good.messages) == 2


def test_build_app_and_examples(chat_factory, tiny_data_dir, tmp_path):
    examples = find_examples(tiny_data_dir)
    assert [bool(row[0]) for row in examples] == [True, False, True]  # rec, vtg, sl
    assert all(row[3] and "<" not in row[3] for row in examples)
    assert find_examples(tmp_path / "nothing") == []
    app = build_app(chat_factory, examples, tmp_path)
    assert isinstance(app, gr.Blocks)
    assert app.demo_backend.modalities == ["image", "video", "audio"]
