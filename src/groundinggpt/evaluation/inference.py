"""Ask a checkpoint about an image, a video or a sound: one question or a multi-turn chat.

:class:`GroundingChat` keeps the conversation and renders every turn through the training
template (:class:`ConversationFormatter`), encodes the media once, and maps the answer's
boxes to pixels of the original image and its spans to seconds; with a pixel decoder, each
``[SEG]`` of the answer becomes a mask of the original image, labelled with its
``<p>phrase</p>``. :func:`infer` is the body of ``infer.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from groundinggpt.build import build_model
from groundinggpt.data.conversation import ConversationFormatter
from groundinggpt.data.media import open_rgb
from groundinggpt.data.segmentation import SegmentationProcessor
from groundinggpt.evaluation.mask_scoring import parse_seg_phrases
from groundinggpt.grounding.format import parse_boxes, parse_spans
from groundinggpt.grounding.geometry import box_from_padded
from groundinggpt.modalities import REGION_TOKEN, modality_specs
from groundinggpt.models.generation import decode_answers, generate_tokens
from groundinggpt.training.segmentation import answer_masks

log = logging.getLogger(__name__)

QUIT = {"", "exit", "quit", "/exit", "/quit"}


@dataclass
class Answer:
    """One generated answer and the grounding parsed from it.

    Args:
        text: the decoded answer.
        boxes: boxes in pixels ``(x0, y0, x1, y1)`` of the original image (relative to the
            padded square when there is no image).
        spans: spans ``(start_s, end_s)`` in seconds of the video / sound (fractions when
            neither is given).
        masks: one ``(H, W)`` bool mask of the original image per ``[SEG]`` of the answer
            (a model with a pixel decoder, asked about an image).
        mask_labels: each mask's phrase (the ``<p>...</p>`` before its ``[SEG]``), else
            ``"[SEG] k"``.
    """

    text: str
    boxes: list[tuple[float, ...]] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    mask_labels: list[str] = field(default_factory=list)


def mask_labels(text: str, n: int) -> list[str]:
    """The label of each of the ``n`` masks of an answer: its phrase, else ``"[SEG] k"``.

    Example:
        >>> mask_labels("<p>a dog</p> [SEG] and [SEG]", 2)
        ['a dog', '[SEG] 2']
    """
    phrases = parse_seg_phrases(text)
    return [(phrases[k] if k < len(phrases) else None) or f"[SEG] {k + 1}" for k in range(n)]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class GroundingChat:
    """A conversation with a grounding model about one set of media.

    Args:
        model: the grounding model (weights loaded).
        tokenizer: its tokenizer.
        processors: ``{"image": ImageProcessor, "video": ..., "audio": ...}`` as in training.
        media_tokens: patch tokens per modality; default the model's ``media_tokens``.
        system: system prompt of the template (as in training).
        max_length: longest prompt the model may see; a longer chat must be reset.
        media_after_text: media blocks after the text of a turn (as in training).
        generation: kwargs of ``generate`` (``max_new_tokens``...; greedy by default).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: weights and media dtype (``"bfloat16"`` halves a 7B model's memory); None keeps
            the checkpoint's.

    Example:
        >>> chat = GroundingChat(model, tok, processors)
        >>> chat.set_media(image="photo.jpg")
        >>> chat.ask("Where is the dog?").boxes
        [(12.0, 40.5, 88.2, 120.0)]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        processors: Mapping[str, Callable],
        media_tokens: Mapping[str, int] | None = None,
        system: str = "",
        max_length: int = 2048,
        media_after_text: bool = False,
        generation: Mapping[str, Any] | None = None,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = getattr(torch, dtype) if dtype else None
        self.model = model.eval().requires_grad_(False).to(self.device, self.dtype)
        self.tokenizer = tokenizer
        self.processors = dict(processors)
        tokens = media_tokens if media_tokens is not None else model.media_tokens
        self.formatter = ConversationFormatter(
            tokenizer, modality_specs(tokens), system, media_after_text
        )
        self.max_length = max_length
        self.generation = dict(generation or {"max_new_tokens": 64})
        self.history: list[dict[str, str]] = []
        self.paths: dict[str, Path] = {}
        self.features: dict[str, torch.Tensor] = {}
        self.image_size: tuple[int, int] | None = None
        self.duration: float | None = None
        self.media: dict[str, torch.Tensor] = {}
        decoder = getattr(model, "pixel_decoder", None)
        self.segmenter = None if decoder is None else SegmentationProcessor(decoder.image_size)
        self.seg_pixels: torch.Tensor | None = None  # SAM's view of the image (3, S, S)

    def set_media(
        self, image: str | None = None, video: str | None = None, audio: str | None = None
    ) -> None:
        """Load, encode and keep the media of the conversation; starts a new conversation.

        ``audio`` may be a sound file or a video with a sound track.

        Raises:
            MediaError: when a file is missing or unreadable.
            ValueError: when the model has no branch for a given modality.
        """
        given = {m: Path(p) for m, p in (("image", image), ("video", video), ("audio", audio)) if p}
        unknown = set(given) - set(self.formatter.specs) or set(given) - set(self.processors)
        if unknown:
            raise ValueError(f"this model/config cannot take {sorted(unknown)} input")
        media = {m: self.processors[m](p)[None] for m, p in given.items()}  # (1, ...) each
        media = {m: x.to(self.device, self.dtype) for m, x in media.items()}
        with torch.no_grad():
            self.features = self.model.encode(media) if media else {}
        self.paths, self.media = given, media
        self.image_size = open_rgb(given["image"]).size if "image" in given else None
        self.seg_pixels = None
        if self.segmenter is not None and "image" in given:
            pixels, _ = self.segmenter.pixels(given["image"])
            self.seg_pixels = pixels.to(self.device, self.dtype)
        self.duration = self._duration()
        self.reset()

    def _duration(self) -> float | None:
        if "video" in self.paths and hasattr(self.processors["video"], "duration"):
            return float(self.processors["video"].duration(self.paths["video"]))
        if "audio" in self.paths and hasattr(self.processors["audio"], "load_waveform"):
            proc = self.processors["audio"]
            return proc.load_waveform(self.paths["audio"]).shape[1] / proc.sample_rate
        return None

    def reset(self) -> None:
        """Forget the conversation (the media stay)."""
        self.history = []

    def _human_turn(self, prompt: str) -> str:
        """The first turn gets a placeholder for every given medium it does not mention."""
        placeholders = {m: s.placeholder for m, s in self.formatter.specs.items()}
        mentioned = {m for m, ph in placeholders.items() if ph in prompt}
        if self.history and mentioned:
            raise ValueError("media placeholders belong in the first question of a chat")
        if mentioned - set(self.paths):
            raise ValueError(
                f"the prompt mentions {sorted(mentioned - set(self.paths))} media "
                "that were not given"
            )
        if self.history:
            return prompt
        missing = [placeholders[m] for m in self.paths if m not in mentioned]
        return "".join(f"{ph}\n" for ph in missing) + prompt

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the whole conversation plus ``prompt``, ending with ``ASSISTANT:``."""
        turns = [*self.history, {"from": "human", "value": self._human_turn(prompt)}]
        return self.formatter.prompt_ids(turns)

    def ask(self, prompt: str) -> Answer:
        """Answer ``prompt`` in the context of the conversation so far, and remember both."""
        if REGION_TOKEN in prompt:
            raise ValueError(
                f"a {REGION_TOKEN} prompt needs its box, and infer.py / the demo take no region "
                "boxes yet (records' `regions` field: train.py and eval.py)"
            )
        human = self._human_turn(prompt)
        ids = self.formatter.prompt_ids([*self.history, {"from": "human", "value": human}])
        if len(ids) > self.max_length:
            raise ValueError(f"the conversation is {len(ids)} tokens > {self.max_length}: reset it")
        batch = {
            "prompt_ids": torch.tensor([ids], device=self.device),  # (1, T)
            "prompt_mask": torch.ones(1, len(ids), dtype=torch.long, device=self.device),
            "media": {},
        }
        with torch.no_grad():
            tokens = generate_tokens(
                self.model, self.tokenizer, batch, self.generation, features=self.features
            )
        text = decode_answers(self.tokenizer, tokens)[0]
        self.history += [{"from": "human", "value": human}, {"from": "gpt", "value": text}]
        return self.ground(text, self.answer_masks(batch, tokens))

    def answer_masks(self, batch: dict[str, Any], tokens: torch.Tensor) -> list[np.ndarray]:
        """One bool mask of the original image per ``[SEG]`` generated in ``tokens`` (1, T).

        Empty without a pixel decoder, an image or a ``[SEG]`` in the answer.
        """
        seg_id = getattr(self.model, "seg_token_id", None)
        if self.seg_pixels is None or seg_id is None or not (tokens == seg_id).any():
            return []
        width, height = self.image_size
        batch = batch | {
            "media": self.media,
            "media_paths": [{m: str(p) for m, p in self.paths.items()}],
            "seg_owner": [0],
            "seg_pixels": self.seg_pixels[None],
            "seg_sizes": [(height, width)],
        }
        (masks,) = answer_masks(self.model, batch, tokens, self.tokenizer.pad_token_id)
        return list(masks.cpu().numpy())

    def ground(self, text: str, masks: list[np.ndarray] | None = None) -> Answer:
        """Parse boxes and spans from ``text`` into pixels and seconds of the current media.

        ``masks`` (one per ``[SEG]``, from `answer_masks`) are kept with their phrases.
        """
        boxes = parse_boxes(text)
        if self.image_size is not None:
            boxes = [box_from_padded(b, *self.image_size) for b in boxes]
        spans = parse_spans(text)
        if self.duration is not None:
            spans = [(s * self.duration, e * self.duration) for s, e in spans]
        masks = list(masks or [])
        return Answer(text, [tuple(b) for b in boxes], [tuple(s) for s in spans], masks,
                      mask_labels(text, len(masks)))  # fmt: skip

    def save_picture(self, answer: Answer, path: str | Path, num_frames: int = 4) -> Path | None:
        """Masks and boxes drawn on the image, or spans on a timeline under a few video frames.

        Each mask is a translucent colour labelled with its phrase (`draw_masks`), the boxes
        are outlined over them. Returns None when there is nothing to draw on (no image,
        video or sound).
        """
        from groundinggpt.utils.visualize import (
            caption_image,
            draw_boxes,
            draw_masks,
            plot_timeline,
        )

        path = Path(path)
        if "image" in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            note = "" if answer.boxes or answer.masks else NO_BOX
            picture = open_rgb(self.paths["image"])
            if answer.masks:
                picture = draw_masks(picture, answer.masks, answer.mask_labels)
            picture = draw_boxes(picture, answer.boxes)
            caption_image(picture, answer.text, note).save(path)
            return path
        if self.duration is None:
            return None
        frames, times = self._frames(num_frames) if "video" in self.paths else ([], [])
        note = "" if answer.spans else NO_SPAN
        return plot_timeline(path, self.duration, answer.spans, frames, times, answer.text, note)

    def _frames(self, num: int) -> tuple[list[np.ndarray], list[float]]:
        import decord

        vr = decord.VideoReader(str(self.paths["video"]))
        idx = np.linspace(0, len(vr) - 1, min(num, len(vr))).round().astype(int).tolist()
        frames = list(vr.get_batch(idx).asnumpy())
        return frames, [float(vr.get_frame_timestamp(i)[0]) for i in idx]


NO_BOX = "no box [x0, y0, x1, y1] could be parsed from the answer"
NO_SPAN = "no span {start, end} could be parsed from the answer"


def describe(answer: Answer, has_image: bool, has_time: bool) -> str:
    """The answer and its grounding as printable lines.

    Example:
        >>> print(describe(Answer("{0.25, 0.75}", spans=[(0.75, 2.25)]), False, True))
        answer: {0.25, 0.75}
        span 1 (seconds): 0.75 - 2.25
        >>> print(describe(Answer("<p>a dog</p> [SEG]", masks=[np.ones((2, 3))],
        ...                       mask_labels=["a dog"]), True, False))
        answer: <p>a dog</p> [SEG]
        mask 1 (a dog): 6 pixels
    """
    lines = [f"answer: {answer.text}"]
    unit_box = "pixels" if has_image else "relative to the padded square"
    unit_span = "seconds" if has_time else "fractions of the duration"
    for k, box in enumerate(answer.boxes, 1):
        lines.append(f"box {k} ({unit_box}, x0 y0 x1 y1): " + " ".join(f"{v:.1f}" for v in box))
    for k, (s, e) in enumerate(answer.spans, 1):
        lines.append(f"span {k} ({unit_span}): {s:.2f} - {e:.2f}")
    for k, (mask, label) in enumerate(zip(answer.masks, answer.mask_labels, strict=True), 1):
        lines.append(f"mask {k} ({label}): {int(np.count_nonzero(mask))} pixels")
    if not (answer.boxes or answer.spans or answer.masks) and (has_image or has_time):
        lines.append(f"({NO_BOX if has_image else NO_SPAN})")
    return "\n".join(lines)


def _answer_and_draw(chat: GroundingChat, prompt: str, picture: Path) -> Answer:
    answer = chat.ask(prompt)
    print(describe(answer, chat.image_size is not None, chat.duration is not None))
    saved = chat.save_picture(answer, picture)
    if saved is not None:
        print(f"picture: {saved}")
    return answer


def chat_loop(chat: GroundingChat, output_dir: Path, lines: Iterable[str] | None = None) -> int:
    """Read questions (stdin, or ``lines``) until an empty line/``exit``; ``/reset`` restarts.

    Returns the number of answered turns.

    Example:
        >>> chat_loop(chat, Path("run"), ["Where is the dog?", "And the cat?", "exit"])
        2
    """
    turn = 0
    stream = iter(lines) if lines is not None else None
    while True:
        try:
            line = next(stream) if stream is not None else input("USER> ")
        except (EOFError, StopIteration):
            break
        line = line.strip()
        if line.lower() in QUIT:
            break
        if line == "/reset":
            chat.reset()
            print("(conversation reset)")
            continue
        turn += 1
        _answer_and_draw(chat, line, output_dir / f"answer_{turn:02d}.png")
    return turn


def infer(cfg: DictConfig) -> Answer | None:
    """Body of ``infer.py``: one answer to ``cfg.prompt``, or a chat with ``chat=true``.

    Example:
        >>> infer(compose("infer", ["ckpt_path=last.ckpt", "image=a.jpg", "prompt=Where?"]))
    """
    model, tokenizer = build_model(cfg, "ckpt_path")
    chat = hydra.utils.instantiate(cfg.assistant, model=model, tokenizer=tokenizer)
    chat.set_media(image=cfg.get("image"), video=cfg.get("video"), audio=cfg.get("audio"))
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("chat"):
        chat_loop(chat, output_dir)
        return None
    if not cfg.get("prompt"):
        raise ValueError("give a question with prompt=... (or chat=true)")
    return _answer_and_draw(chat, cfg.prompt, output_dir / "answer.png")
