from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import decord
import numpy as np
import pytest

from groundinggpt.data import synthetic
from groundinggpt.data.media import (
    AudioProcessor,
    ImageProcessor,
    VideoProcessor,
    open_rgb,
)
from groundinggpt.data.synthetic import (
    check_splits_disjoint,
    ensure_synthetic,
    load_records,
    uniform_sizes,
)
from groundinggpt.data.synthetic.generate import resolve_config
from groundinggpt.data.synthetic.scene import COLORS
from groundinggpt.grounding.format import parse_box, parse_span, parse_yes_no, pope_answer
from groundinggpt.grounding.geometry import box_from_padded

SIZES = uniform_sizes(train=4, val=2, test=2)
CFG = {"seed": 3, "sizes": SIZES}
STAGE2 = ("rec", "vtg", "sl", "pope")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _all_records(root: Path) -> list[dict]:
    return [r for f in sorted((root / "annotations").glob("*.json")) for r in load_records(f)]


def _nearest_color(rgb: np.ndarray) -> str:
    return min(COLORS, key=lambda c: np.abs(np.asarray(COLORS[c]) - rgb.astype(int)).sum())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("syn") / "data", progress=False, **CFG)


def test_layout_and_record_format(root: Path) -> None:
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for task, splits in SIZES.items():
        for split, n in splits.items():
            rel = f"annotations/{task}_{split}.json"
            records = load_records(root / rel)
            assert len(records) == n == manifest["annotations"][rel]["records"]
            for r in records:
                assert r["task"] == task and r["id"].startswith(f"{task}_{split}_")
                turns = r["conversations"]
                assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
                media = [k for k in ("image", "video", "sound") if k in r]
                prefix = "".join(f"<{k}>\n" for k in media)
                assert turns[0]["value"].startswith(prefix) and len(media) > 0
                text = "".join(t["value"] for t in turns)
                assert all(
                    text.count(f"<{k}>") == (k in media) for k in ("image", "video", "sound")
                )
    assert {"image", "sound"} <= set(load_records(root / "annotations/sl_test.json")[0])


def test_generation_is_deterministic(root: Path, tmp_path: Path) -> None:
    """Same config -> byte-identical files, whatever the number of worker processes."""
    again = ensure_synthetic(tmp_path / "again", num_workers=2, progress=False, **CFG)
    assert _files(again) == _files(root)
    other = ensure_synthetic(tmp_path / "other", progress=False, seed=4, sizes=SIZES)
    assert _files(other)["annotations/rec_train.json"] != _files(root)["annotations/rec_train.json"]


def test_splits_are_disjoint(root: Path) -> None:
    by_split: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for task in STAGE2:
        for split in by_split:
            by_split[split] += load_records(root / f"annotations/{task}_{split}.json")
    digest = {}

    def content_hash(rel: str) -> str:
        return digest.setdefault(rel, hashlib.sha256((root / rel).read_bytes()).hexdigest())

    check_splits_disjoint(by_split, content_hash)
    media = {
        s: {r[k] for r in rs for k in ("image", "video", "sound") if k in r}
        for s, rs in by_split.items()
    }
    assert not (
        media["train"] & media["val"]
        or media["train"] & media["test"]
        or media["val"] & media["test"]
    )
    leaked = {"train": by_split["train"], "test": by_split["test"] + by_split["train"][:1]}
    with pytest.raises(AssertionError, match="splits"):
        check_splits_disjoint(leaked, content_hash)


def test_all_media_exist_and_decode(root: Path) -> None:
    image, audio = ImageProcessor(size=32), AudioProcessor()
    video = VideoProcessor(num_frames=4, size=32)
    for r in _all_records(root):
        if "image" in r:
            assert image(root / r["image"]).shape == (3, 32, 32)
        if "video" in r:
            assert video(root / r["video"]).shape == (4, 3, 32, 32)
        if "sound" in r:
            assert audio(root / r["sound"]).isfinite().all()


def _box_answers(record: dict) -> list[tuple[str, str]]:
    """(question, answer) pairs whose answer is a box."""
    turns = record["conversations"]
    return [
        (q["value"], a["value"])
        for q, a in zip(turns[::2], turns[1::2], strict=True)
        if a["value"].startswith("[")
    ]


@pytest.mark.parametrize("task", ["rec", "sl", "image_chat", "audio_chat"])
def test_boxes_cover_the_drawn_shape(root: Path, task: str) -> None:
    proc = ImageProcessor()
    checked = 0
    for split in SIZES[task]:
        for r in load_records(root / f"annotations/{task}_{split}.json"):
            padded = np.asarray(proc.load_padded(root / r["image"]))
            w, h = r["meta"]["size"]
            for _, answer in _box_answers(r):
                box = parse_box(answer)
                x0, y0, x1, y1 = (v * padded.shape[0] for v in box)
                centre = padded[int((y0 + y1) / 2), int((x0 + x1) / 2)]
                pixel_box = box_from_padded(box, w, h)
                matches = [
                    o for o in r["meta"]["objects"] if np.allclose(o["box"], pixel_box, atol=0.1)
                ]
                assert len(matches) == 1, (r["id"], answer)
                assert _nearest_color(centre) == matches[0]["name"].split()[0], r["id"]
                checked += 1
    assert checked >= len(SIZES[task]) * 2


def test_boxes_are_tight_and_named_correctly(root: Path) -> None:
    for r in load_records(root / "annotations/rec_train.json"):
        target = r["meta"]["objects"][r["meta"]["target"]]
        assert target["name"] in r["conversations"][0]["value"]
        image = np.pad(np.asarray(open_rgb(root / r["image"])), ((1, 1), (1, 1), (0, 0)))
        x0, y0, x1, y1 = target["box"]
        window = image[y0 : y1 + 2, x0 : x1 + 2]  # the box plus a 1 px margin
        ys, xs = np.nonzero((window == COLORS[target["name"].split()[0]]).all(-1))
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (1, 1, x1 - x0 + 1, y1 - y0 + 1)


@pytest.mark.parametrize("task", ["vtg", "video_chat"])
def test_spans_match_the_frames(root: Path, task: str) -> None:
    for split in SIZES[task]:
        for r in load_records(root / f"annotations/{task}_{split}.json"):
            meta = r["meta"]
            frames = decord.VideoReader(str(root / r["video"]))
            assert len(frames) == meta["num_frames"] and frames.get_avg_fps() == meta["fps"]
            x0, y0, x1, y1 = meta["box"]
            centre = frames.get_batch(list(range(len(frames)))).asnumpy()[
                :, (y0 + y1) // 2, (x0 + x1) // 2
            ]
            target = np.asarray(COLORS[meta["target"].split()[0]])
            visible = np.nonzero(np.abs(centre.astype(int) - target).sum(-1) < 60)[0]
            assert (visible.min(), visible.max()) == tuple(meta["frames"])
            assert len(visible) == visible.max() - visible.min() + 1
            span = next(
                parse_span(t["value"])
                for t in r["conversations"][1::2]
                if t["value"].startswith("{")
            )
            n = meta["num_frames"]
            assert (round(span[0] * n), round(span[1] * n)) == (visible.min(), visible.max() + 1)
            assert 0.25 <= (visible.max() + 1 - visible.min()) / n <= 0.6


def test_pope_is_balanced_and_truthful(root: Path) -> None:
    for split in SIZES["pope"]:
        records = load_records(root / f"annotations/pope_{split}.json")
        answers = [r["conversations"][1]["value"] for r in records]
        assert answers.count("Yes.") == answers.count("No.")
        for r in records:
            asked = r["conversations"][0]["value"].split("Is there a ")[1].split(" in the")[0]
            present = asked in {o["name"] for o in r["meta"]["objects"]}
            assert present == (r["conversations"][1]["value"] == "Yes.")


@pytest.mark.parametrize("form", ["echo", "describe"])
def test_pope_answer_forms_put_the_evidence_before_a_truthful_decision(
    tmp_path: Path, form: str
) -> None:
    sizes = {task: {"train": 0} for task in synthetic.generate.DEFAULT_SIZES}
    sizes["pope"] = {"train": 30, "val": 10}
    root = ensure_synthetic(tmp_path / form, progress=False, sizes=sizes, pope_answer=form)
    for split in ("train", "val"):
        for r in load_records(root / f"annotations/pope_{split}.json"):
            asked = r["conversations"][0]["value"].split("Is there a ")[1].split(" in the")[0]
            named = [o["name"] for o in r["meta"]["objects"]]
            answer = r["conversations"][1]["value"]
            evidence, decision = answer.rsplit(" ", 1)
            # both yes/no rules read the decision
            assert parse_yes_no(answer) is (asked in named) is (decision == "yes.")
            assert pope_answer(answer) == decision[:-1]
            if form == "echo":  # the asked object, then the decision
                assert evidence == f"A {asked}:"
            else:  # every object of the image, then the decision
                listed = re.findall(r"a (\w+ \w+)", evidence.removeprefix("I see "))
                assert sorted(listed) == sorted(named)


def test_image_qa_answers_are_true_of_the_one_object_asked_about(tmp_path: Path) -> None:
    sizes = {task: {"train": 0} for task in synthetic.generate.DEFAULT_SIZES}
    sizes["image_qa"] = {"train": 24}
    root = ensure_synthetic(tmp_path / "qa", progress=False, sizes=sizes, objects=[1, 3])
    records = load_records(root / "annotations/image_qa_train.json")
    asked_colour = 0
    for r in records:
        question, answer = (t["value"] for t in r["conversations"])
        objects = [o["name"].split() for o in r["meta"]["objects"]]
        if "What colour is the " in question:  # by kind -> its colour
            kind = question.split("What colour is the ")[1].rstrip("?")
            matches = [(c, k) for c, k in objects if k == kind]
            said = answer.removeprefix("It is ").rstrip(".")
            asked_colour += 1
        else:  # by colour -> its kind
            colour = question.split("What shape is the ")[1].split(" object")[0]
            matches = [(c, k) for c, k in objects if c == colour]
            said = answer.removeprefix("It is a ").rstrip(".")
        assert len(matches) == 1, (question, objects)  # the word names one object
        target = r["meta"]["objects"][r["meta"]["target"]]
        assert target["name"].split() == list(matches[0])
        assert said in matches[0]
        # the answered object is in the picture: its colour fills part of its box
        x0, y0, x1, y1 = target["box"]
        window = np.asarray(open_rgb(root / r["image"]))[y0:y1, x0:x1]
        colour_rgb = COLORS[matches[0][0]]
        assert (window == colour_rgb).all(-1).mean() > 0.3
    assert 0 < asked_colour < len(records)  # both kinds of question


def test_image_verify_answers_yes_exactly_when_the_named_object_has_the_attribute(
    tmp_path: Path,
) -> None:
    sizes = {task: {"train": 0} for task in synthetic.generate.DEFAULT_SIZES}
    sizes["image_verify"] = {"train": 40}
    root = ensure_synthetic(tmp_path / "verify", progress=False, sizes=sizes, objects=[1, 3])
    records = load_records(root / "annotations/image_verify_train.json")
    answers = [r["conversations"][1]["value"] for r in records]
    assert answers.count("Yes.") == answers.count("No.")
    other_object = 0
    for r in records:
        question = r["conversations"][0]["value"].split("\n")[-1]
        objects = [o["name"].split() for o in r["meta"]["objects"]]
        if question.startswith("Is the ") and " object a " in question:  # named by colour
            colour, said = question.removeprefix("Is the ").rstrip("?").split(" object a ")
            (named,) = [(c, k) for c, k in objects if c == colour]
            truth, others = named[1], {k for _, k in objects}
        else:  # named by kind: "Is the square red?"
            kind, said = question.removeprefix("Is the ").rstrip("?").split(" ")
            (named,) = [(c, k) for c, k in objects if k == kind]
            truth, others = named[0], {c for c, _ in objects}
        target = r["meta"]["objects"][r["meta"]["target"]]["name"].split()
        assert target == list(named)
        assert (r["conversations"][1]["value"] == "Yes.") == (said == truth), question
        if said != truth and said in others:
            other_object += 1  # "No." about an attribute another object in the image has
        # the named object is drawn in its colour inside its box
        x0, y0, x1, y1 = r["meta"]["objects"][r["meta"]["target"]]["box"]
        window = np.asarray(open_rgb(root / r["image"]))[y0:y1, x0:x1]
        assert (window == COLORS[named[0]]).all(-1).mean() > 0.3
    assert other_object > 0


def test_sound_matches_a_single_shape_kind(root: Path) -> None:
    pitch = {"low": "circle", "medium": "square", "high": "triangle"}
    records = [*load_records(root / "annotations/sl_train.json")]
    for r in records + load_records(root / "annotations/audio_chat_train.json"):
        kinds = [o["name"].split()[1] for o in r["meta"]["objects"]]
        assert len(set(kinds)) == len(kinds) >= 2
        if r["task"] == "audio_chat":
            word = r["conversations"][1]["value"].split()[1].split("-")[0]
            assert pitch[word] == kinds[r["meta"]["target"]]


def test_images_are_non_square_with_large_shapes(root: Path) -> None:
    for r in load_records(root / "annotations/image_caption_train.json"):
        w, h = r["meta"]["size"]
        assert w != h and min(w, h) >= 64 and max(w, h) <= 112
        for o in r["meta"]["objects"]:
            side = max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1])
            assert 0.25 * min(w, h) - 1 <= side <= 0.5 * min(w, h) + 1


def test_manifest_caches_and_config_changes_regenerate(root: Path) -> None:
    manifest = root / "MANIFEST.json"
    before = (manifest.stat().st_mtime_ns, (root / "annotations/rec_train.json").stat().st_mtime_ns)
    assert ensure_synthetic(root, progress=False, **CFG) == root
    after = (manifest.stat().st_mtime_ns, (root / "annotations/rec_train.json").stat().st_mtime_ns)
    assert after == before


def test_regenerates_on_new_config_without_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "data"
    small = {"sizes": uniform_sizes(train=1, val=1, test=1)}
    ensure_synthetic(root, progress=False, seed=0, **small)
    first = json.loads((root / "MANIFEST.json").read_text())["config_hash"]
    ensure_synthetic(root, progress=False, seed=1, **small)
    assert json.loads((root / "MANIFEST.json").read_text())["config_hash"] != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp or old dirs left


def test_interrupted_generation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic.generate, "check_splits_disjoint", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "data", progress=False, sizes=uniform_sizes(1, 1, 1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["precious.txt", "MANIFEST.json"])
def test_refuses_to_replace_a_foreign_directory(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text('{"keep": "me"}')
    with pytest.raises(FileExistsError):
        ensure_synthetic(tmp_path, progress=False, sizes=uniform_sizes(1, 1, 1))
    assert (tmp_path / name).read_text() == '{"keep": "me"}'


def test_config_validation() -> None:
    assert resolve_config()["sizes"]["rec"] == {"train": 2000, "val": 64, "test": 128}
    assert resolve_config(sizes={"rec": {"val": 3}})["sizes"]["rec"] == {
        "train": 2000,
        "val": 3,
        "test": 128,
    }
    with pytest.raises(ValueError, match="unknown synthetic-data options"):
        resolve_config(sedd=1)
    with pytest.raises(ValueError, match="unknown synthetic task"):
        resolve_config(sizes={"refcoco": {"train": 1}})
    with pytest.raises(ValueError, match="bad size"):
        resolve_config(sizes={"rec": {"dev": 1}})
    with pytest.raises(ValueError, match="image_size"):
        resolve_config(image_size=[64, 64])
    with pytest.raises(ValueError, match="pope_answer"):
        resolve_config(pope_answer="long")


def test_load_records_reads_json_and_jsonl(tmp_path: Path) -> None:
    records = [{"id": "a", "conversations": []}, {"id": "b", "conversations": []}]
    (tmp_path / "r.json").write_text(json.dumps(records))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert load_records(tmp_path / "r.json") == records == load_records(tmp_path / "r.jsonl")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        load_records(tmp_path / "bad.json")


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_video_distractor_share(tmp_path: Path, share: float) -> None:
    sizes = {task: {"train": 0} for task in synthetic.generate.DEFAULT_SIZES}
    sizes["vtg"] = {"train": 6}
    root = ensure_synthetic(tmp_path / "data", progress=False, sizes=sizes, video_distractor=share)
    records = load_records(root / "annotations/vtg_train.json")
    assert len(records) == 6
    assert all((r["meta"]["distractor"] is not None) == bool(share) for r in records)
    with pytest.raises(ValueError, match="video_distractor"):
        resolve_config(video_distractor=1.5)


def test_grounded_caption_order(tmp_path: Path) -> None:
    """Random order names the same objects with the same boxes, only not left to right."""
    sizes = {task: {"train": 0} for task in synthetic.generate.DEFAULT_SIZES}
    sizes["grounded_caption"] = {"train": 40}
    captions, roots = {}, {}
    for order in ("left_to_right", "random"):
        root = roots[order] = ensure_synthetic(
            tmp_path / order, progress=False, sizes=sizes, objects=[2, 3], grounded_order=order
        )
        records = load_records(root / "annotations/grounded_caption_train.json")
        captions[order] = [r["conversations"][1]["value"] for r in records]
        for r, caption in zip(records, captions[order], strict=True):
            centres = []
            for obj in r["meta"]["objects"]:
                box = parse_box(caption.split(obj["name"], 1)[1])  # the box after its name
                x0, _, x1, _ = box_from_padded(box, *r["meta"]["size"])
                assert abs(x0 - obj["box"][0]) <= 2 and abs(x1 - obj["box"][2]) <= 2
                centres.append((caption.index(obj["name"]), (obj["box"][0] + obj["box"][2]) / 2))
            named = [c for _, c in sorted(centres)]  # object centres in the caption's order
            r["left_to_right"] = named == sorted(named)
        share = np.mean([r["left_to_right"] for r in records])
        if order == "left_to_right":
            assert share == 1.0
        else:
            assert share < 0.8  # 2-3 objects in a random order: about 0.4 in order
    # the order is drawn after the scene: the same images under both orders
    assert _files(roots["left_to_right"]).keys() == _files(roots["random"]).keys()
    for path, content in _files(roots["left_to_right"]).items():
        if path.endswith(".png"):
            assert (roots["random"] / path).read_bytes() == content
    with pytest.raises(ValueError, match="grounded_order"):
        resolve_config(grounded_order="by_size")


def test_text_pope_states_the_scene_in_words_and_answers_by_it(tmp_path: Path) -> None:
    sizes = {task: {"train": 0} for task in synthetic.generate.DEFAULT_SIZES}
    sizes["text_pope"] = {"train": 40}
    root = ensure_synthetic(
        tmp_path / "text_pope",
        progress=False,
        sizes=sizes,
        objects=[1, 2],
        pope_negatives="disjoint",
    )
    records = load_records(root / "annotations/text_pope_train.json")
    answers = [r["conversations"][1]["value"] for r in records]
    assert answers.count("Yes.") == answers.count("No.") == 20
    for r in records:
        assert not any(key in r for key in ("image", "video", "sound"))  # text only
        question = r["conversations"][0]["value"]
        assert "<" not in question  # no media placeholder
        scene, asked = question.removeprefix("The image shows ").split(". Is there a ")
        asked = asked.removesuffix(" in the image?")
        named = [o["name"] for o in r["meta"]["objects"]]
        assert re.findall(r"a (\w+ \w+)", scene) == named  # the scene names every object
        assert (r["conversations"][1]["value"] == "Yes.") == (asked in named)
        if asked not in named:  # disjoint: the absent object shares no word with the scene
            assert not set(asked.split()) & {w for n in named for w in n.split()}
