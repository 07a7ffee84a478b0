"""A web demo (Gradio): upload an image, a video and/or a sound, ask, see the grounded answer.

:func:`build_app` wires a :class:`DemoBackend` into a ``gradio.Blocks`` page; :func:`launch` is
the body of ``demo.py`` (``python demo.py ckpt_path=CKPT``). The model is loaded once and
shared; each browser session keeps its own conversation (a :class:`DemoSession` in
``gr.State``), so users never see each other's turns. Answers come with the picture that
``infer.py`` draws (boxes on the image, spans on a timeline under a few frames), captioned with
the raw answer and a clear notice when no box/span could be parsed from it. Unreadable media
and other failures show a short message in the page, never a stack trace.

Gradio is an optional extra: ``pip install -e ".[demo]"``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from groundinggpt.data.media import MediaError
from groundinggpt.evaluation.inference import Answer, GroundingChat, describe

log = logging.getLogger(__name__)

MODALITIES = ("image", "video", "audio")
# Annotation files whose first records make the page's examples (task -> file).
EXAMPLE_FILES = ("rec_test.json", "vtg_test.json", "sl_test.json")
_RECORD_KEYS = {"image": "image", "video": "video", "audio": "sound"}

MediaPaths = tuple[str | None, str | None, str | None]


@dataclass
class DemoSession:
    """One browser session: its conversation (with the shared model) and what the page shows.

    Args:
        chat: this session's conversation; its model is the one shared by all sessions.
        media: the ``(image, video, audio)`` paths ``chat`` was given, None before any load
            (or after a failed one).
        messages: the chat history as Gradio messages (``{"role": ..., "content": ...}``).

    Example:
        >>> DemoSession(chat).messages
        []
    """

    chat: GroundingChat
    media: MediaPaths | None = None
    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Reply:
    """What a handler gives back to the page.

    Args:
        session: the (updated) session, kept in ``gr.State``.
        messages: the chat history to show.
        answer: the answer and its grounding as text ("" when there is none).
        picture: the answer picture (PIL image) or None.
        status: a one-line status or error message (Markdown).
        error: True when ``status`` is an error (the page also raises a ``gr.Warning``).
    """

    session: DemoSession | None
    messages: list[dict[str, str]]
    answer: str = ""
    picture: Any = None
    status: str = ""
    error: bool = False


def _name(path: str | None) -> str:
    return Path(path).name if path else ""


def media_message(exc: Exception, media: MediaPaths) -> str:
    """A short, user-facing explanation of why the media could not be used.

    Example:
        >>> media_message(MediaError("/tmp/x/cat.png", "cannot identify image file"),
        ...               ("/tmp/x/cat.png", None, None))
        'Could not read the image file cat.png: cannot identify image file.'
    """
    if isinstance(exc, MediaError):
        which = next((m for m, p in zip(MODALITIES, media, strict=True) if p == exc.path), None)
        what = f"the {which} file" if which else "the file"
        return f"Could not read {what} {_name(exc.path)}: {exc.reason.rstrip('.')}."
    return f"Could not use these media: {exc}"


def answer_lines(chat: GroundingChat, answer: Answer) -> list[str]:
    """The answer and its boxes (pixels) / spans (seconds) as ``infer.py`` prints them.

    Example:
        >>> answer_lines(chat_with_image, Answer("a red circle"))
        ['answer: a red circle', '(no box [x0, y0, x1, y1] could be parsed from the answer)']
    """
    return describe(answer, chat.image_size is not None, chat.duration is not None).split("\n")


class DemoBackend:
    """The demo's handlers, free of any page: load media, ask, reset.

    Args:
        chat_factory: returns a new :class:`GroundingChat` on the shared model (called once
            per browser session, and once here to check that it works).
        picture_dir: where answer pictures are written (a temporary folder by default).

    Example:
        >>> backend = DemoBackend(lambda: GroundingChat(model, tok, processors, tokens))
        >>> reply = backend.ask("Where is the red circle?", "photo.png", None, None, None)
        >>> reply.answer.splitlines()[0]
        'answer: [0.1, 0.2, 0.4, 0.5]'
    """

    def __init__(
        self, chat_factory: Callable[[], GroundingChat], picture_dir: str | Path | None = None
    ) -> None:
        import tempfile

        self.chat_factory = chat_factory
        self.picture_dir = Path(picture_dir or tempfile.mkdtemp(prefix="groundinggpt-demo-"))
        self.lock = threading.Lock()  # one generation at a time on the shared model
        probe = chat_factory()
        self.modalities = [m for m in MODALITIES if m in probe.formatter.specs]

    def new_session(self) -> DemoSession:
        """A fresh session with its own conversation."""
        return DemoSession(self.chat_factory())

    def load_media(
        self,
        image: str | None,
        video: str | None,
        audio: str | None,
        session: DemoSession | None,
    ) -> Reply:
        """Encode the given media for ``session`` and start a new conversation about them."""
        session = session or self.new_session()
        media: MediaPaths = (image or None, video or None, audio or None)
        session.media, session.messages = None, []
        try:
            with self.lock:
                session.chat.set_media(*media)
        except (MediaError, ValueError) as exc:
            return Reply(session, [], status=media_message(exc, media), error=True)
        except Exception as exc:  # anything else: logged here, a short line in the page
            log.exception("loading media %s failed", media)
            return Reply(session, [], status=f"Could not use these media ({exc}).", error=True)
        session.media = media
        given = [f"{m} {_name(p)}" for m, p in zip(MODALITIES, media, strict=True) if p]
        status = "Loaded " + ", ".join(given) + "." if given else "No media: a text-only chat."
        return Reply(session, [], status=status + " Ask a question.")

    def ask(
        self,
        question: str,
        image: str | None,
        video: str | None,
        audio: str | None,
        session: DemoSession | None,
    ) -> Reply:
        """Answer ``question`` about the media in ``session``'s conversation (loaded if new)."""
        media: MediaPaths = (image or None, video or None, audio or None)
        if session is None or session.media != media:
            loaded = self.load_media(*media, session)
            if loaded.error:
                return loaded
            session = loaded.session
        assert session is not None
        question = (question or "").strip()
        if not question:
            return Reply(session, session.messages, status="Type a question first.", error=True)
        try:
            with self.lock:
                answer = session.chat.ask(question)
                picture = self.picture(session.chat, answer)
        except MediaError as exc:
            return Reply(session, session.messages, status=media_message(exc, media), error=True)
        except ValueError as exc:  # e.g. a conversation longer than the model's context
            return Reply(session, session.messages, status=f"Could not answer: {exc}.", error=True)
        except Exception as exc:
            log.exception("answering %r failed", question)
            msg = f"Could not answer ({type(exc).__name__}: {exc})."
            return Reply(session, session.messages, status=msg, error=True)
        session.messages = [
            *session.messages,
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer.text},
        ]
        lines = answer_lines(session.chat, answer)
        turns = len(session.messages) // 2
        return Reply(session, session.messages, "\n".join(lines), picture, f"Turn {turns}.")

    def reset(self, session: DemoSession | None) -> Reply:
        """Forget ``session``'s conversation; its media stay loaded."""
        if session is not None:
            session.chat.reset()
            session.messages = []
        return Reply(session, [], status="Conversation reset: same media, new chat.")

    def picture(self, chat: GroundingChat, answer: Answer) -> Any:
        """``infer.py``'s picture of ``answer`` (PIL): boxes or spans, the raw answer under them.

        Without media there is nothing to draw on: the raw answer alone, on a blank band.
        """
        from PIL import Image

        from groundinggpt.utils.visualize import caption_image

        path = chat.save_picture(answer, self.picture_dir / f"answer_{uuid.uuid4().hex}.png")
        if path is None:
            return caption_image(Image.new("RGB", (480, 1), "white"), answer.text)
        with Image.open(path) as img:
            picture = img.convert("RGB")
        path.unlink(missing_ok=True)
        return picture


def find_examples(root: str | Path, per_file: int = 1) -> list[list[str | None]]:
    """Example inputs ``[image, video, audio, question]`` from a synthetic dataset's test sets.

    Returns ``[]`` when the dataset is not there (the demo then shows no examples).

    Example:
        >>> find_examples("data/synthetic")[0]
        ['data/synthetic/images/rec_test_00000.png', None, None, 'Where is the blue triangle? ...']
    """
    root = Path(root)
    examples: list[list[str | None]] = []
    for name in EXAMPLE_FILES:
        try:
            records = json.loads((root / "annotations" / name).read_text())
        except (OSError, ValueError):
            continue
        for record in records[:per_file]:
            paths = [record.get(_RECORD_KEYS[m]) for m in MODALITIES]
            paths = [str(root / p) if p else None for p in paths]
            if not all(Path(p).is_file() for p in paths if p):
                continue
            prompt = record["conversations"][0]["value"]
            question = " ".join(
                line for line in prompt.splitlines() if not line.strip().startswith("<")
            )
            examples.append([*paths, question.strip()])
    return examples


def build_app(
    chat_factory: Callable[[], GroundingChat],
    examples: Sequence[Sequence[str | None]] = (),
    picture_dir: str | Path | None = None,
    title: str = "GroundingGPT",
):
    """The demo page: media uploads, a question box, the chat, the answer and its picture.

    Args:
        chat_factory: a new :class:`GroundingChat` on the shared, already loaded model.
        examples: ``[image, video, audio, question]`` rows (see :func:`find_examples`).
        picture_dir: where answer pictures are written (a temporary folder by default).
        title: the page title.

    Returns:
        a ``gradio.Blocks``; ``.launch()`` it.

    Example:
        >>> build_app(factory, find_examples("data/synthetic")).launch(server_port=7860)
    """
    try:
        import gradio as gr
    except ImportError as exc:
        raise ImportError("the web demo needs gradio: pip install -e '.[demo]'") from exc

    backend = DemoBackend(chat_factory, picture_dir)

    def show(reply: Reply) -> tuple:
        if reply.error:
            gr.Warning(reply.status)
        status = f"**Error:** {reply.status}" if reply.error else reply.status
        return reply.session, reply.messages, reply.answer, reply.picture, status

    def on_media(image, video, audio, session):
        return show(backend.load_media(image, video, audio, session))

    def on_ask(question, image, video, audio, session):
        reply = backend.ask(question, image, video, audio, session)
        return (*show(reply), question if reply.error else "")

    def on_reset(session):
        return show(backend.reset(session))

    with gr.Blocks(title=title) as app:
        app.demo_backend = backend  # the handlers, for tests and scripting
        gr.Markdown(
            f"# {title}\nUpload an image, a video and/or a sound, then ask about them. "
            "Boxes are drawn on the image, time spans on a timeline; changing the media "
            "starts a new conversation."
        )
        session = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                files = {
                    m: gr.File(
                        label=label,
                        file_types=types,
                        type="filepath",
                        elem_id=f"{m}-file",
                        visible=m in backend.modalities,
                    )
                    for m, label, types in (
                        ("image", "Image", ["image"]),
                        ("video", "Video", ["video"]),
                        ("audio", "Sound (or a video with sound)", ["audio", ".mp4"]),
                    )
                }
                status = gr.Markdown("Upload media to start.", elem_id="status")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=320)
                question = gr.Textbox(
                    label="Question",
                    placeholder="Where is the red circle?",
                    elem_id="question",
                    lines=1,
                )
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    reset = gr.Button("Reset", elem_id="reset")
        with gr.Row():
            answer = gr.Textbox(label="Answer", elem_id="answer", lines=4, interactive=False)
            picture = gr.Image(
                label="Answer picture", type="pil", elem_id="picture", interactive=False
            )

        media_inputs = [files["image"], files["video"], files["audio"]]
        outputs = [session, chatbot, answer, picture, status]
        for comp in media_inputs:
            comp.change(on_media, [*media_inputs, session], outputs)
        for event in (ask.click, question.submit):
            event(on_ask, [question, *media_inputs, session], [*outputs, question])
        reset.click(on_reset, [session], outputs)
        if examples:
            gr.Examples(
                [list(row) for row in examples],
                inputs=[*media_inputs, question],
                label="Examples (synthetic data)",
            )
    return app


def chat_factory_from_config(cfg: DictConfig) -> Callable[[], GroundingChat]:
    """Load ``cfg``'s model once; the factory returns a new conversation on it per call.

    Example:
        >>> factory = chat_factory_from_config(compose("demo", ["ckpt_path=last.ckpt"]))
        >>> factory().model is factory().model
        True
    """
    import hydra

    from groundinggpt.build import build_model

    model, tokenizer = build_model(cfg, "ckpt_path")
    processors = hydra.utils.instantiate(cfg.assistant.processors, _convert_="all")
    assistant = {k: v for k, v in cfg.assistant.items() if k != "processors"}

    def chat_factory() -> GroundingChat:
        return hydra.utils.instantiate(
            assistant, model=model, tokenizer=tokenizer, processors=processors
        )

    return chat_factory


def launch(cfg: DictConfig, block: bool = True):
    """Body of ``demo.py``: load the model once, build the page and serve it.

    Args:
        cfg: the composed ``configs/demo.yaml``.
        block: wait until the server stops (False returns the running app, e.g. for tests).

    Example:
        >>> launch(compose("demo", ["ckpt_path=last.ckpt"]))  # http://127.0.0.1:7860
    """
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo phones no one
    chat_factory = chat_factory_from_config(cfg)
    examples_dir = cfg.get("examples_dir")
    examples = find_examples(examples_dir, cfg.get("examples_per_task", 1)) if examples_dir else []
    picture_dir = Path(cfg.paths.output_dir) / "pictures"
    app = build_app(chat_factory, examples, picture_dir, title=cfg.get("title", "GroundingGPT"))
    app.queue()
    app.launch(
        server_name=cfg.server_name,
        server_port=cfg.server_port,
        allowed_paths=[str(examples_dir)] if examples_dir else None,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return app
