"""eval.py on the pixel-grounding benchmarks (RES, GCG, AVSBench) and infer.py's masks.

Official-format fixtures (`test_mask_benchmarks`' writers) and the untrained tiny seg model
saved as a checkpoint: the numbers are meaningless, the plumbing is what is checked. Most
runs replace generation by the reference answers (so that ``[SEG]`` tokens reach the pixel
decoder) except one sample per benchmark, answered without ``[SEG]`` (a miss).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import compose_config
from tests.evaluation.fixtures import write_image
from tests.evaluation.test_mask_benchmarks import (
    AVS_H,
    AVS_W,
    GCG_H,
    GCG_W,
    write_gcg,
    write_mask_png,
    write_res,
    write_s4,
)

from groundinggpt.evaluation import engine
from groundinggpt.evaluation.benchmarks import complete_meta, load_benchmark
from groundinggpt.evaluation.engine import evaluate
from groundinggpt.evaluation.mask_scoring import gcg_caption, parse_seg_phrases, target_masks
from groundinggpt.grounding.masks import decode_mask

AVS_VIDEO, AVS_CATEGORY = "zzQ7zMAFKlQ_3", "playing_violin"
MISSES = {"0_1", "sa_2", f"{AVS_VIDEO}_2"}  # answered "It is." (no [SEG])
COUNTS = {"res": 3, "gcg": 2, "avs": 5}
KEYS = {
    "res": ("ciou", "giou"),
    "gcg": ("ap50", "miou", "recall", "cider"),
    "avs": ("miou", "fscore"),
}
TIMING = ("time/wall_s", "time/samples_per_s")


# ---------------------------------------------------------------------------------- parsing


def test_seg_phrases_and_captions_are_parsed_tolerantly() -> None:
    text = "<p>A man</p> [SEG] rides <p> a horse </p>[SEG] near [SEG] and <p>sand</p>."
    assert parse_seg_phrases(text) == ["A man", "a horse", None]
    assert gcg_caption(text) == "A man rides a horse near and sand."
    assert parse_seg_phrases("<p>a dog [SEG] <p></p> [SEG]") == ["a dog", None]  # no </p>
    for junk in (None, 3, "", "[SEG", "</p>[SEG]<p>"):
        assert isinstance(parse_seg_phrases(junk), list)  # never raises
        assert isinstance(gcg_caption(junk), str)


# --------------------------------------------------------------------------------- fixtures


def write_avs(root: Path) -> tuple[Path, Path, Path]:
    """S4 test video with all 5 frames; frame 3's mask is empty (no sounding object)."""
    csv_path, frames, audio = write_s4(root)
    video = Path(AVS_VIDEO, AVS_VIDEO)
    for k in (3, 4, 5):
        write_image(frames / "test" / AVS_CATEGORY / f"{video}_{k}.png", AVS_W, AVS_H)
        mask = np.zeros((AVS_H, AVS_W), dtype=bool)
        mask[1:4, 2 : 2 + k] = k != 3
        write_mask_png(
            frames.parent / "gt_masks" / "test" / AVS_CATEGORY / f"{video}_{k}.png", mask
        )
    return csv_path, frames, audio


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, list[str]]:
    """Benchmark overrides per task, on official-format fixture files."""
    root = tmp_path_factory.mktemp("mask_bench")
    refs, coco = write_res(root / "res")
    folder = write_gcg(root / "gcg")
    media = root / "gcg" / "GranDf_HA_images" / "val_test"
    write_image(media / "sa_1.jpg", GCG_W, GCG_H)
    write_image(media / "sa_2.jpg", 10, 8)
    csv_path, frames, audio = write_avs(root / "avs")
    return {
        "res": ["benchmark=refcoco_res", f"benchmark.annotation_file={refs.parent}",
                f"benchmark.media_dir={coco}", "benchmark.split=val"],
        "gcg": ["benchmark=gcg", f"benchmark.annotation_file={folder}",
                f"benchmark.media_dir={media}", "benchmark.split=val"],
        "avs": ["benchmark=avsbench", f"benchmark.annotation_file={csv_path}",
                f"benchmark.media_dir={frames}", f"benchmark.audio_dir={audio}",
                "benchmark.split=test"],
    }  # fmt: skip


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory) -> Path:
    """The untrained tiny seg model (seed 0) as a Lightning-style checkpoint."""
    import hydra

    root = tmp_path_factory.mktemp("seg_ckpt")
    cfg = compose_config(["ckpt_path=x", "model=tiny_seg"], root, root / "run", "eval")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
    state = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, root / "seg.ckpt")
    return root / "seg.ckpt"


def mask_cfg(root: Path, ckpt: Path, overrides: list[str], *extra: str, model: str = "tiny_seg"):
    return compose_config([
        f"ckpt_path={ckpt}", f"model={model}", *overrides, "benchmark.max_new_tokens=8",
        "datamodule.batch_size=2", "datamodule.num_workers=0", "evaluator.gcg_java=false",
        "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", *extra,
    ], root, root / "run", config_name="eval")  # fmt: skip


def teacher_tokens(model, tokenizer, batch, generation=None, features=None) -> torch.Tensor:
    """Generation replaced by each sample's reference answer ("It is." for the `MISSES`)."""
    texts = ["It is." if s.id in MISSES else s.reference() for s in batch["samples"]]
    ids = [tokenizer(t, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
           for t in texts]  # fmt: skip
    out = torch.full((len(ids), max(map(len, ids))), tokenizer.pad_token_id)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.tensor(row)
    return out.to(batch["prompt_ids"].device)


def run_eval(cfg, teacher: bool = True) -> tuple[dict, list[dict]]:
    with pytest.MonkeyPatch.context() as mp:
        if teacher:  # forked DDP workers inherit the patch
            mp.setattr(engine, "generate_tokens", teacher_tokens)
        evaluate(cfg)
    run = Path(cfg.paths.output_dir)
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return json.loads((run / "metrics.json").read_text()), rows


@pytest.fixture(scope="module", params=["res", "gcg", "avs"])
def single(request, tmp_path_factory, bench, seg_ckpt) -> tuple[str, dict, list[dict]]:
    task = request.param
    root = tmp_path_factory.mktemp(f"single_{task}")
    metrics, rows = run_eval(mask_cfg(root, seg_ckpt, bench[task], "evaluator.save_masks=true"))
    return task, metrics, rows


# ------------------------------------------------------------------------------------ eval


def test_each_benchmark_writes_its_keys_with_the_fixture_counts(single) -> None:
    task, metrics, rows = single
    for key in KEYS[task]:
        assert 0.0 <= metrics[f"test/{task}/{key}"] <= max(1.0, metrics[f"test/{task}/{key}"])
    assert metrics[f"test/{task}/count"] == COUNTS[task] == metrics["samples/total"] == len(rows)
    assert metrics[f"test/{task}/skipped"] == 0 and metrics[f"test/{task}/unscored"] == 0
    assert metrics[f"test/{task}/unparsed"] == 1  # the one answer without [SEG]
    for row in rows:
        assert {"output", "num_masks", "mask_ious", "score", "prediction"} <= set(row)
        assert len(row["mask_ious"]) == row["num_masks"] == row["output"].count("[SEG]")


def test_an_answer_without_seg_is_a_miss(single) -> None:
    task, _, rows = single
    (miss,) = [r for r in rows if r["id"] in MISSES]
    assert miss["output"] == "It is." and miss["num_masks"] == 0 and miss["prediction"] is None
    assert miss["masks"] == [] and miss["score"] == 0.0  # the missed target is not empty
    answered = [r for r in rows if r["id"] not in MISSES]
    assert all(r["num_masks"] == r["output"].count("[SEG]") > 0 for r in answered)


def test_metrics_agree_with_the_saved_masks(single, bench) -> None:
    """cIoU / gIoU and AVSBench's mIoU recomputed from predictions.jsonl's masks and targets."""
    task, metrics, rows = single
    kwargs = {"res": {"split": "val"}, "gcg": {"split": "val"}, "avs": {"split": "test"}}[task]
    overrides = dict(o.split("=", 1) for o in bench[task][1:])
    name = bench[task][0].split("=")[1]
    samples = load_benchmark(name, overrides["benchmark.annotation_file"],
                             Path(overrides["benchmark.media_dir"]),
                             audio_dir=overrides.get("benchmark.audio_dir") and
                             Path(overrides["benchmark.audio_dir"]), **kwargs)  # fmt: skip
    by_id = {s.id: complete_meta(s) for s in samples}
    inter = union = 0
    for row in rows:
        targets = target_masks(by_id[row["id"]])
        masks = [decode_mask(m, *targets[0].shape) for m in row["masks"]]
        assert [int(m.sum()) for m in masks] == (row["prediction"] or {}).get("areas", [])
        if task == "res":
            pred = masks[0] if masks else np.zeros_like(targets[0])
            inter, union = inter + (pred & targets[0]).sum(), union + (pred | targets[0]).sum()
            assert row["score"] == pytest.approx(
                (pred & targets[0]).sum() / (pred | targets[0]).sum()
            )
    scores = [r["score"] for r in rows]
    if task == "res":
        assert metrics["test/res/ciou"] == pytest.approx(inter / union)
        assert metrics["test/res/giou"] == pytest.approx(np.mean(scores))
    if task == "avs":
        assert metrics["test/avs/miou"] == pytest.approx(np.mean(scores))
        empty = [r for r in rows if r["id"] == f"{AVS_VIDEO}_3"][0]
        assert 0.0 <= empty["score"] <= 1.0  # empty target: share of pixels left background
    if task == "gcg":
        sa_1 = [r for r in rows if r["id"] == "sa_1"][0]
        assert sa_1["phrases"] == ["A man", "a horse"]
        assert sa_1["prediction"]["caption"] == "A man rides a horse on the beach."


@pytest.mark.parametrize("task", ["res", "gcg", "avs"])
def test_two_processes_give_exactly_the_one_process_result(
    task, tmp_path, bench, seg_ckpt, tmp_path_factory
) -> None:
    """gloo, 2 CPU processes (fork): synced mask metrics and gathered rows == 1 process.

    Counts are equal exactly; float64 sums (AVSBench's F-curve, gIoU) add the ranks' parts in
    another order, so values agree to 1e-12, not always to the last bit.
    """
    one = mask_cfg(tmp_path / "one", seg_ckpt, bench[task], "evaluator.save_masks=true")
    two = mask_cfg(tmp_path / "two", seg_ckpt, bench[task], "evaluator.save_masks=true",
                   "trainer.devices=2", "+trainer.strategy=ddp_fork")  # fmt: skip
    m1, rows1 = run_eval(one)
    m2, rows2 = run_eval(two)
    assert sorted(m2) == sorted(m1)
    for key in set(m1) - set(TIMING):
        same = m1[key] if isinstance(m1[key], str) else pytest.approx(m1[key], rel=1e-12)
        assert m2[key] == same, key
    assert rows2 == rows1
    assert m2[f"test/{task}/count"] == m1[f"test/{task}/count"] == COUNTS[task]


def test_real_generation_without_seg_scores_misses(tmp_path, bench, seg_ckpt) -> None:
    """One generated token of the untrained model is never [SEG]: every answer is a miss."""
    cfg = mask_cfg(tmp_path, seg_ckpt, bench["res"], "benchmark.max_new_tokens=1")
    metrics, rows = run_eval(cfg, teacher=False)
    assert all("[SEG]" not in r["output"] and r["num_masks"] == 0 for r in rows)
    assert "masks" not in rows[0]  # save_masks is off by default
    assert metrics["test/res/unparsed"] == metrics["test/res/count"] == 3
    assert metrics["test/res/ciou"] == metrics["test/res/giou"] == 0.0


def test_a_model_without_pixel_decoder_is_refused(tmp_path, bench, tiny_weights) -> None:
    cfg = mask_cfg(tmp_path, tiny_weights.ckpt, bench["res"], model="tiny")
    with pytest.raises(ValueError, match="pixel decoder"):
        evaluate(cfg)


# ----------------------------------------------------------------------------------- infer

ANSWER = "<p>the dot</p> [SEG] and [SEG]."


def test_masks_are_drawn_translucent_and_labelled() -> None:
    from PIL import Image

    from groundinggpt.utils.visualize import MASK_COLORS, draw_masks

    image = Image.new("RGB", (40, 30), (100, 100, 100))
    mask = np.zeros((30, 40), dtype=bool)
    mask[10:25, 5:30] = True
    plain = np.asarray(draw_masks(image, [mask], ["", ""], alpha=0.5), dtype=int)
    labelled = np.asarray(draw_masks(image, [mask], ["a dot"], alpha=0.5), dtype=int)
    blend = (np.array([100, 100, 100]) + np.array(MASK_COLORS[0])) / 2
    np.testing.assert_allclose(plain[24, 29], blend, atol=1)  # inside: colour at 50 %
    away = ~mask
    away[10:25] = False  # the label starts in the mask's top-left corner and may run out of it
    assert (plain[away] == 100).all()  # outside untouched
    assert (labelled != plain).any()  # the text differs from the default "[SEG] 1"
    with pytest.raises(ValueError, match="mask 0 has shape"):
        draw_masks(image, [mask.T])


def _force_tokens(monkeypatch, text: str) -> None:
    from groundinggpt.evaluation import inference

    def tokens(model, tokenizer, *args, **kwargs):
        return tokenizer([text], add_special_tokens=False, return_tensors="pt").input_ids

    monkeypatch.setattr(inference, "generate_tokens", tokens)


def _infer_cfg(root: Path, ckpt: Path, image: Path):
    return compose_config([
        f"ckpt_path={ckpt}", "model=tiny_seg", f"image={image}", "prompt='Segment the dot.'",
        "assistant.device=cpu", "assistant.generation.max_new_tokens=8",
    ], root, root / "run", config_name="infer")  # fmt: skip


def test_infer_lists_and_draws_the_masks(tmp_path, seg_ckpt, monkeypatch, capsys) -> None:
    from PIL import Image

    from groundinggpt.evaluation import inference

    photo = write_image(tmp_path / "photo.png", 48, 30, value=60)
    _force_tokens(monkeypatch, ANSWER)
    answer = inference.infer(_infer_cfg(tmp_path, seg_ckpt, photo))
    assert answer.text == ANSWER and answer.mask_labels == ["the dot", "[SEG] 2"]
    assert [m.shape for m in answer.masks] == [(30, 48), (30, 48)]
    out = capsys.readouterr().out
    for k, (mask, label) in enumerate(zip(answer.masks, answer.mask_labels, strict=True), 1):
        assert f"mask {k} ({label}): {int(mask.sum())} pixels" in out
    assert "no box" not in out
    picture = Image.open(tmp_path / "run" / "answer.png")
    assert picture.width == 48 and picture.height > 30  # the photo, the answer in a band below


def test_infer_picture_shows_each_mask(tmp_path, seg_ckpt, monkeypatch) -> None:
    """The saved picture has the mask's colour exactly where the answer's mask is."""
    from PIL import Image

    from groundinggpt.evaluation import inference
    from groundinggpt.utils.visualize import MASK_COLORS

    photo = write_image(tmp_path / "photo.png", 48, 30, value=60)
    known = np.zeros((30, 48), dtype=bool)
    known[15:28, 20:44] = True
    _force_tokens(monkeypatch, "<p>a box</p> [SEG]")
    monkeypatch.setattr(inference, "answer_masks", lambda *a, **k: [torch.from_numpy(known)[None]])
    answer = inference.infer(_infer_cfg(tmp_path, seg_ckpt, photo))
    assert len(answer.masks) == 1 and answer.masks[0].sum() == known.sum()
    arr = np.asarray(Image.open(tmp_path / "run" / "answer.png").convert("RGB"), dtype=int)[:30]
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=int)
    away = ~known
    away[15:28] = False  # the label may run out of the mask to the right
    assert (arr[away] == original[away]).all()
    blend = 0.55 * original[known] + 0.45 * np.array(MASK_COLORS[0])  # infer's alpha 0.45
    np.testing.assert_allclose(arr[27, 43], blend[-1], atol=1)  # far from the label
