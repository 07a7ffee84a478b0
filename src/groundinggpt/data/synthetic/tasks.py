"""One builder per synthetic task: draw the media for one record, write it, return the record.

Every builder takes a `Job` (task, split, index, its own seeded RNG and the generation
parameters) and returns a record in the released GroundingGPT format plus a ``meta`` entry with
the exact, unrounded ground truth (pixel boxes, frame ranges) for checks and analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groundinggpt.data.synthetic.scene import (
    COLORS,
    PITCH_WORDS,
    SHAPES,
    TONE_HZ,
    Shape,
    background,
    describe,
    distinct_objects,
    left_to_right,
    paint,
    place_shapes,
)
from groundinggpt.data.synthetic.writers import tone, write_mp4, write_png, write_wav
from groundinggpt.grounding.format import format_box, format_span
from groundinggpt.grounding.geometry import box_to_padded
from groundinggpt.grounding.masks import encode_mask
from groundinggpt.modalities import REGION_TOKEN, SEG_TOKEN

BOX_SUFFIX = "Answer with a bounding box."
GROUNDED_CAPTION_QUESTION = "Describe the image with bounding boxes."
# Pixel grounding (GLaMM-style prompts); every [SEG] of an answer has one mask in "masks".
SEG_ANSWER = f"It is {SEG_TOKEN}."
GCG_QUESTION = "Describe the image with segmentation masks."
AVS_QUESTION = "Please segment the object that makes this sound."
# Region input (GLaMM): each <region> of a prompt has one pixel box in "regions".
REGION_QUESTION = f"What is in {REGION_TOKEN}?"
PLACEHOLDER_ORDER = ("image", "video", "sound")


@dataclass(frozen=True)
class Params:
    """Generation parameters shared by all tasks (the non-size part of the config)."""

    image_size: tuple[int, int] = (64, 112)
    side_frac: tuple[float, float] = (0.25, 0.5)
    objects: tuple[int, int] = (1, 3)
    # POPE's absent objects: "any" absent (colour, kind) pair, or "disjoint": sharing neither
    # colour nor kind with a present object where one exists (like POPE's random split).
    pope_negatives: str = "any"
    # Share of videos that also show a second, static shape the whole time (the event query
    # must then name the right one; without it, "when does a shape appear" is the task).
    video_distractor: float = 0.5
    # Order of the objects of a grounded caption: "left_to_right", or "random" (then a box
    # cannot be told from the object's place in the sentence: the caption must read the name).
    grounded_order: str = "left_to_right"
    # POPE's answers: "short" ("Yes." / "No."), "echo" (the asked object first: "A red
    # square: no.") or "describe" (what the image shows first: "I see a blue circle, so no.").
    pope_answer: str = "short"
    video_size: int = 64
    fps: int = 8
    video_seconds: tuple[float, float] = (3.0, 6.0)
    span_frac: tuple[float, float] = (0.25, 0.6)
    audio_seconds: tuple[float, float] = (2.0, 4.0)
    sample_rate: int = 16000


@dataclass
class Job:
    """One record to generate; ``out`` is the dataset directory media paths are relative to."""

    task: str
    split: str
    index: int
    rng: np.random.Generator
    params: Params
    out: Path

    @property
    def stem(self) -> str:
        return f"{self.task}_{self.split}_{self.index:05d}"

    def media_path(self, folder: str, ext: str) -> str:
        rel = f"{folder}/{self.stem}.{ext}"
        (self.out / folder).mkdir(parents=True, exist_ok=True)
        return rel


@dataclass
class ImageScene:
    """A written image: its relative path, size and shapes with tight pixel boxes."""

    path: str
    width: int
    height: int
    shapes: list[Shape]
    boxes: list[tuple[int, int, int, int]]

    def box_text(self, i: int) -> str:
        return format_box(box_to_padded(self.boxes[i], self.width, self.height))

    def meta(self) -> dict:
        objects = [
            {"name": s.name, "box": list(b)} for s, b in zip(self.shapes, self.boxes, strict=True)
        ]
        return {"size": [self.width, self.height], "objects": objects}

    def masks(self, order: list[int]) -> list[dict]:
        """COCO RLE masks of the shapes ``order`` (one per ``[SEG]``, in answer order)."""
        return [encode_mask(self.shapes[i].mask(self.width, self.height)) for i in order]

    def left_to_right(self) -> list[int]:
        """Shape indices in the order `describe` names them."""
        return left_to_right(self.shapes)


@dataclass
class VideoEvent:
    """A written video: the target shown during frames ``[first, last]``, maybe a distractor."""

    path: str
    target: Shape
    box: tuple[int, int, int, int]
    distractor: Shape | None
    first: int
    last: int
    num_frames: int
    fps: int

    @property
    def span(self) -> tuple[float, float]:
        """Visible interval as fractions of the duration; frame i lasts ``[i, i + 1) / fps``."""
        return self.first / self.num_frames, (self.last + 1) / self.num_frames

    def meta(self) -> dict:
        d = self.distractor.name if self.distractor else None
        return {
            "target": self.target.name,
            "box": list(self.box),
            "distractor": d,
            "frames": [self.first, self.last],
            "num_frames": self.num_frames,
            "fps": self.fps,
        }


# ------------------------------------------------------------------------------------- media


def make_image(job: Job, n_objects: int, distinct_kinds: bool = False) -> ImageScene:
    """Draw and write a non-square image with ``n_objects`` distinct shapes."""
    rng, p = job.rng, job.params
    lo, hi = p.image_size
    width, height = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    while abs(width - height) < 8:  # keep it clearly non-square so padding matters
        width, height = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    objects = distinct_objects(rng, n_objects, distinct_kinds)
    shapes = place_shapes(rng, width, height, objects, p.side_frac)
    canvas = background(rng, width, height)
    boxes = [paint(canvas, s) for s in shapes]
    path = job.media_path("images", "png")
    write_png(job.out / path, canvas)
    return ImageScene(path, width, height, shapes, boxes)


def make_video(job: Job) -> VideoEvent:
    """Draw and write a video where one shape is visible for 25-60 % of the frames."""
    rng, p = job.rng, job.params
    n = int(rng.integers(round(p.video_seconds[0] * p.fps), round(p.video_seconds[1] * p.fps) + 1))
    objects = distinct_objects(rng, 2)
    with_distractor = bool(rng.random() < p.video_distractor)
    shapes = place_shapes(
        rng, p.video_size, p.video_size, objects[: 1 + with_distractor], p.side_frac
    )
    static = background(rng, p.video_size, p.video_size)
    if with_distractor:
        paint(static, shapes[1])
    shown = static.copy()
    box = paint(shown, shapes[0])
    length = int(rng.integers(math.ceil(p.span_frac[0] * n), math.floor(p.span_frac[1] * n) + 1))
    first = int(rng.integers(0, n - length + 1))
    visible = (np.arange(n) >= first) & (np.arange(n) < first + length)
    frames = np.where(visible[:, None, None, None], shown[None], static[None])  # (T, H, W, 3)
    path = job.media_path("videos", "mp4")
    write_mp4(job.out / path, frames, p.fps)
    distractor = shapes[1] if with_distractor else None
    return VideoEvent(path, shapes[0], box, distractor, first, first + length - 1, n, p.fps)


def make_sound(job: Job, kind: str) -> str:
    """Write the tone of a shape kind (pitch jittered +-5 %, 2-4 s) and return its path."""
    rng, p = job.rng, job.params
    seconds = rng.uniform(*p.audio_seconds)
    freq = TONE_HZ[kind] * rng.uniform(0.95, 1.05)
    path = job.media_path("audio", "wav")
    write_wav(job.out / path, tone(rng, freq, seconds, p.sample_rate), p.sample_rate)
    return path


# ----------------------------------------------------------------------------------- records


def make_record(job: Job, media: dict[str, str], turns: list[tuple[str, str]], meta: dict) -> dict:
    """A record in the released format; placeholders open the first human turn."""
    prefix = "".join(f"<{key}>\n" for key in PLACEHOLDER_ORDER if key in media)
    conversations = []
    for i, (question, answer) in enumerate(turns):
        conversations.append({"from": "human", "value": (prefix if i == 0 else "") + question})
        conversations.append({"from": "gpt", "value": answer})
    record = {"id": job.stem, "task": job.task}
    record.update({key: media[key] for key in PLACEHOLDER_ORDER if key in media})
    record.update({"conversations": conversations, "meta": meta})
    return record


def _absent_object(rng: np.random.Generator, shapes: list[Shape], disjoint: bool = False) -> str:
    """A (colour, kind) name not in ``shapes``; ``disjoint``: sharing neither, if possible."""
    present = {s.name for s in shapes}
    absent = [f"{c} {k}" for c in COLORS for k in SHAPES if f"{c} {k}" not in present]
    if disjoint:
        colors, kinds = {s.color for s in shapes}, {s.kind for s in shapes}
        far = [n for n in absent if n.split()[0] not in colors and n.split()[1] not in kinds]
        absent = far or absent
    return absent[int(rng.integers(len(absent)))]


def _n_objects(job: Job, at_least: int = 1) -> int:
    """Object count of an image, uniform in ``params.objects`` (raised to ``at_least``)."""
    lo, hi = job.params.objects
    return int(job.rng.integers(max(lo, at_least), max(hi, at_least) + 1))


def image_caption(job: Job) -> dict:
    scene = make_image(job, _n_objects(job))
    turns = [("Describe the image briefly.", describe(scene.shapes))]
    return make_record(job, {"image": scene.path}, turns, scene.meta())


def video_caption(job: Job) -> dict:
    event = make_video(job)
    turns = [("Describe the video briefly.", f"a {event.target.name} appears in the video.")]
    return make_record(job, {"video": event.path}, turns, event.meta())


def audio_caption(job: Job) -> dict:
    kind = SHAPES[int(job.rng.integers(len(SHAPES)))]
    sound = make_sound(job, kind)
    turns = [("Describe the sound briefly.", f"a {PITCH_WORDS[kind]}-pitched tone.")]
    return make_record(job, {"sound": sound}, turns, {"source": kind})


def grounded_caption(job: Job) -> dict:
    """Every object with its box (a dense, Visual-Genome-like region task), left to right or in
    a random order (``params.grounded_order``)."""
    scene = make_image(job, _n_objects(job))
    labels = [scene.box_text(i) for i in range(len(scene.shapes))]
    order = None
    if job.params.grounded_order == "random":
        order = [int(i) for i in job.rng.permutation(len(scene.shapes))]
    turns = [(GROUNDED_CAPTION_QUESTION, describe(scene.shapes, labels, order))]
    return make_record(job, {"image": scene.path}, turns, scene.meta())


def rec(job: Job) -> dict:
    scene = make_image(job, _n_objects(job))
    i = int(job.rng.integers(len(scene.shapes)))
    turns = [(f"Where is the {scene.shapes[i].name}? {BOX_SUFFIX}", scene.box_text(i))]
    return make_record(job, {"image": scene.path}, turns, {**scene.meta(), "target": i})


def _asked_object(job: Job, shapes: list[Shape]) -> tuple[str, bool]:
    """The object an existence question names and whether it is there: present for even
    record indices (an exact 50/50 balance in every split), else absent as
    ``params.pope_negatives`` says."""
    present = job.index % 2 == 0
    if present:
        return shapes[int(job.rng.integers(len(shapes)))].name, True
    return _absent_object(job.rng, shapes, job.params.pope_negatives == "disjoint"), False


def pope(job: Job) -> dict:
    scene = make_image(job, _n_objects(job))
    name, present = _asked_object(job, scene.shapes)
    # one sentence each, so that both yes/no rules (`parse_yes_no`, POPE's own: the first
    # sentence) read the decision
    answer = "Yes." if present else "No."
    if job.params.pope_answer == "echo":
        answer = f"A {name}: {answer.lower()}"
    elif job.params.pope_answer == "describe":
        answer = f"I see {describe(scene.shapes)[:-1]}, so {answer.lower()}"
    turns = [(f"Is there a {name} in the image?", answer)]
    return make_record(job, {"image": scene.path}, turns, {**scene.meta(), "label": present})


def vtg(job: Job) -> dict:
    event = make_video(job)
    turns = [(f"When does the {event.target.name} appear?", format_span(event.span))]
    return make_record(job, {"video": event.path}, turns, event.meta())


def _sounding_scene(job: Job) -> tuple[ImageScene, int, str]:
    """An image with 2-3 shapes of different kinds and the sound of one of them."""
    scene = make_image(job, _n_objects(job, at_least=2), distinct_kinds=True)
    i = int(job.rng.integers(len(scene.shapes)))
    return scene, i, make_sound(job, scene.shapes[i].kind)


def sl(job: Job) -> dict:
    scene, i, sound = _sounding_scene(job)
    question = f"Which object is making this sound? {BOX_SUFFIX}"
    turns = [(question, scene.box_text(i))]
    return make_record(
        job, {"image": scene.path, "sound": sound}, turns, {**scene.meta(), "target": i}
    )


def res(job: Job) -> dict:
    """Referring segmentation: "Please segment the red circle in this image." -> one mask."""
    scene = make_image(job, _n_objects(job))
    i = int(job.rng.integers(len(scene.shapes)))
    turns = [(f"Please segment the {scene.shapes[i].name} in this image.", SEG_ANSWER)]
    record = make_record(job, {"image": scene.path}, turns, {**scene.meta(), "target": i})
    return {**record, "masks": scene.masks([i])}


def gcg(job: Job) -> dict:
    """Grounded caption with masks: ``<p>a red circle</p> [SEG]`` per object, left to right."""
    scene = make_image(job, _n_objects(job))
    order = scene.left_to_right()
    phrases = [f"<p>a {scene.shapes[i].name}</p> {SEG_TOKEN}" for i in order]
    caption = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    record = make_record(job, {"image": scene.path}, [(GCG_QUESTION, caption + ".")], scene.meta())
    return {**record, "masks": scene.masks(order)}


def avs(job: Job) -> dict:
    """Sound-source segmentation: image + the tone of one shape kind -> that shape's mask."""
    scene, i, sound = _sounding_scene(job)
    turns = [(AVS_QUESTION, SEG_ANSWER)]
    meta = {**scene.meta(), "target": i}
    record = make_record(job, {"image": scene.path, "sound": sound}, turns, meta)
    return {**record, "masks": scene.masks([i])}


def region_caption(job: Job) -> dict:
    """Region captioning: "What is in <region>?" with the box of one shape -> "a red circle."."""
    scene = make_image(job, _n_objects(job))
    i = int(job.rng.integers(len(scene.shapes)))
    turns = [(REGION_QUESTION, f"a {scene.shapes[i].name}.")]
    record = make_record(job, {"image": scene.path}, turns, {**scene.meta(), "target": i})
    return {**record, "regions": [list(scene.boxes[i])]}


def _image_turn(job: Job, scene: ImageScene, kind: str) -> tuple[str, str]:
    rng = job.rng
    i = int(rng.integers(len(scene.shapes)))
    if kind == "box":
        return f"Where is the {scene.shapes[i].name}? {BOX_SUFFIX}", scene.box_text(i)
    if kind == "region":
        return f"What is the object at {scene.box_text(i)}?", f"a {scene.shapes[i].name}."
    if rng.random() < 0.5:
        return f"Is there a {scene.shapes[i].name} in the image?", "Yes."
    return f"Is there a {_absent_object(rng, scene.shapes)} in the image?", "No."


def image_chat(job: Job) -> dict:
    scene = make_image(job, _n_objects(job))
    kinds = ["box", "exists"]
    if job.rng.random() < 0.5:
        kinds.append(("box", "exists", "region")[int(job.rng.integers(3))])
    kinds = [kinds[i] for i in job.rng.permutation(len(kinds))]
    turns = [_image_turn(job, scene, kind) for kind in kinds]
    return make_record(job, {"image": scene.path}, turns, scene.meta())


def video_chat(job: Job) -> dict:
    event = make_video(job)
    turns = [
        ("What appears in the video?", f"a {event.target.name}."),
        ("When does it appear?", format_span(event.span)),
    ]
    if job.rng.random() < 0.5:
        shapes = [s for s in (event.target, event.distractor) if s is not None]
        if job.rng.random() < 0.5:
            name, answer = shapes[int(job.rng.integers(len(shapes)))].name, "Yes."
        else:
            name, answer = _absent_object(job.rng, shapes), "No."
        turns.append((f"Is there a {name} in the video?", answer))
    return make_record(job, {"video": event.path}, turns, event.meta())


def audio_chat(job: Job) -> dict:
    scene, i, sound = _sounding_scene(job)
    kind = scene.shapes[i].kind
    turns = [
        ("What does the sound sound like?", f"a {PITCH_WORDS[kind]}-pitched tone."),
        (f"Which object in the image is making this sound? {BOX_SUFFIX}", scene.box_text(i)),
    ]
    meta = {**scene.meta(), "target": i}
    return make_record(job, {"image": scene.path, "sound": sound}, turns, meta)


def _named_alone(shapes: list[Shape]) -> list[tuple[bool, int]]:
    """``(named by its kind?, index)`` for every attribute that names one object alone in the
    image (its kind, its colour or both), object by object."""
    colors = [s.color for s in shapes]
    kinds = [s.kind for s in shapes]
    named = []
    for i, shape in enumerate(shapes):
        if kinds.count(shape.kind) == 1:
            named.append((True, i))
        if colors.count(shape.color) == 1:
            named.append((False, i))
    return named


def image_qa(job: Job) -> dict:
    """An attribute question about one object (a VQA-like task): its colour asked by its kind,
    or its kind by its colour, whichever names it alone in the image. The answer is one word
    read off the object the question's word picks out: the word-to-image match that REC's
    two-object scenes and POPE rely on, taught with a dense (4- or 3-way) answer. The answer's
    word follows a space ("It is green."), so it is the same token as in questions and
    captions."""
    scene = make_image(job, _n_objects(job))
    questions = []
    for by_kind, i in _named_alone(scene.shapes):
        shape = scene.shapes[i]
        if by_kind:
            questions.append((f"What colour is the {shape.kind}?", f"It is {shape.color}.", i))
        else:
            questions.append(
                (f"What shape is the {shape.color} object?", f"It is a {shape.kind}.", i)
            )
    # distinct (colour, kind) pairs: with up to 3 objects some attribute is always unique
    question, answer, i = questions[int(job.rng.integers(len(questions)))]
    return make_record(
        job, {"image": scene.path}, [(question, answer)], {**scene.meta(), "target": i}
    )


def image_verify(job: Job) -> dict:
    """A yes/no check of one object's attribute: "Is the square red?" / "Is the red object a
    square?" (the object named by whichever attribute is unique in the image). Half the
    answers are "No." (even record index = "Yes.", as POPE), naming another colour or kind:
    the other object's where the image has one, so the answer needs the named object, not any
    object. Existence (POPE) compares a word of the question with the image in the same way;
    here the object is always there, so the comparison is taught without the absence."""
    scene = make_image(job, _n_objects(job))
    colors = [s.color for s in scene.shapes]
    kinds = [s.kind for s in scene.shapes]
    yes = job.index % 2 == 0
    # kind-named objects first, then colour-named ones (a stable sort keeps object order)
    candidates = sorted(_named_alone(scene.shapes), key=lambda c: not c[0])
    by_kind, i = candidates[int(job.rng.integers(len(candidates)))]
    shape = scene.shapes[i]
    options, truth = (list(COLORS), shape.color) if by_kind else (list(SHAPES), shape.kind)
    others = [o for o in (colors if by_kind else kinds) if o != truth]
    if yes:
        said = truth
    elif others:  # another object's attribute: only the named object answers it
        said = others[int(job.rng.integers(len(others)))]
    else:
        wrong = [o for o in options if o != truth]
        said = wrong[int(job.rng.integers(len(wrong)))]
    if by_kind:
        question = f"Is the {shape.kind} {said}?"
    else:
        question = f"Is the {shape.color} object a {said}?"
    turns = [(question, "Yes." if yes else "No.")]
    return make_record(job, {"image": scene.path}, turns, {**scene.meta(), "target": i})


def text_pope(job: Job) -> dict:
    """POPE with the scene given as words and no media: "The image shows a red square and a
    blue circle. Is there a green triangle in the image?" -> "No." The same questions as
    `pope`, so the comparison of the question's words with what the scene holds can be taught
    in text (what a pretrained LLM brings from its language pretraining). Measured: it forms
    as late in text as in images and did not make existence learn earlier
    (experiments/2026-12-06_existence/); off by default."""
    objects = distinct_objects(job.rng, _n_objects(job))
    shapes = [Shape(color, kind, 0, 0, 1) for color, kind in objects]
    name, present = _asked_object(job, shapes)
    scene = "The image shows " + describe(shapes, order=list(range(len(shapes))))
    turns = [(f"{scene} Is there a {name} in the image?", "Yes." if present else "No.")]
    meta = {"objects": [{"name": s.name} for s in shapes], "label": present}
    return make_record(job, {}, turns, meta)


# Append-only: a task's position seeds its RNG, so reordering would change every file.
BUILDERS: dict[str, Callable[[Job], dict]] = {
    "image_caption": image_caption,
    "video_caption": video_caption,
    "audio_caption": audio_caption,
    "rec": rec,
    "vtg": vtg,
    "sl": sl,
    "pope": pope,
    "image_chat": image_chat,
    "video_chat": video_chat,
    "audio_chat": audio_chat,
    "grounded_caption": grounded_caption,
    "res": res,
    "gcg": gcg,
    "avs": avs,
    "region_caption": region_caption,
    "image_qa": image_qa,
    "image_verify": image_verify,
    "text_pope": text_pope,
}
