"""The eval engine: sharding without padding, skips scored as misses, metrics == predictions,
batched == per-sample generation, and a 2-process (gloo) run == a 1-process run."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
from omegaconf import open_dict
from PIL import Image
from tests.conftest import compose_config

from groundinggpt.build import build_datamodule, build_model
from groundinggpt.data.media import ImageProcessor
from groundinggpt.data.tokenizer import build_tokenizer
from groundinggpt.evaluation.benchmarks import BenchmarkSample, load_benchmark
from groundinggpt.evaluation.datamodule import (
    BenchmarkCollator,
    BenchmarkDataModule,
    BenchmarkDataset,
    ShardedBatchSampler,
    Skipped,
)
from groundinggpt.evaluation.engine import evaluate, format_table, merge_rows
from groundinggpt.evaluation.scoring import score
from groundinggpt.modalities import SPECIAL_TOKENS

TASK_FILES = ("rec", "vtg", "sl", "pope")
TIMING = ("time/wall_s", "time/samples_per_s")


# ---------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize(("n", "batch", "world"), [(17, 4, 2), (5, 2, 3), (8, 8, 2), (1, 3, 4)])
def test_shards_cover_every_sample_once_in_the_same_batches(n, batch, world) -> None:
    single = list(ShardedBatchSampler(n, batch))
    shards = [list(ShardedBatchSampler(n, batch, r, world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    batches = [b for s in shards for b in s if b]
    assert sorted(map(tuple, batches)) == sorted(map(tuple, single))  # identical batches
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(n))  # every sample exactly once: no padding duplicates


def test_merge_rows_refuses_duplicates_and_losses() -> None:
    rows = [{"id": "b", "index": 1}, {"id": "a", "index": 0}]
    assert [r["id"] for r in merge_rows(rows, expected=2)] == ["a", "b"]
    with pytest.raises(RuntimeError, match="more than once"):
        merge_rows([*rows, {"id": "a", "index": 0}])
    with pytest.raises(RuntimeError, match="benchmark has 3"):
        merge_rows(rows, expected=3)


def test_table_lists_every_metric() -> None:
    table = format_table({"test/rec/acc@0.5": 0.25, "samples/total": 4.0})
    assert "test/rec/acc@0.5  0.2500" in table and "samples/total" in table


# ---------------------------------------------------------------------------- eval fixtures


@pytest.fixture(scope="module")
def ckpt(tiny_weights) -> Path:
    """Random tiny weights as .safetensors (the format of converted releases)."""
    return tiny_weights.safetensors


@pytest.fixture(scope="module")
def annotations(tiny_data_dir, tmp_path_factory) -> list[str]:
    """The tiny test split plus one REC record whose image is missing (a skip)."""
    ann = tiny_data_dir / "annotations"
    bad = json.loads((ann / "rec_test.json").read_text())[0]
    bad |= {"id": "rec_missing", "image": "images/does_not_exist.png"}
    extra = tmp_path_factory.mktemp("ann") / "rec_extra.json"
    extra.write_text(json.dumps([bad]))
    return [str(ann / f"{t}_test.json") for t in TASK_FILES] + [str(extra)]


def eval_cfg(root: Path, data_dir: Path, ckpt: Path, files: list[str], *extra: str):
    overrides = [
        f"ckpt_path={ckpt}",
        "benchmark=synthetic",
        f"benchmark.annotation_file=[{','.join(files)}]",
        f"benchmark.media_dir={data_dir}",
        "benchmark.max_new_tokens=8",
        "datamodule.batch_size=4",
        "datamodule.num_workers=0",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        *extra,
    ]
    return compose_config(overrides, root, root / "run", config_name="eval")


def _read(run: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return metrics, rows


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_data_dir, ckpt, annotations) -> Path:
    root = tmp_path_factory.mktemp("single")
    evaluate(eval_cfg(root, tiny_data_dir, ckpt, annotations))
    return root / "run"


# ---------------------------------------------------------------------------------- engine


def test_outputs_follow_the_contract(single_run, tiny_data_dir, annotations) -> None:
    metrics, rows = _read(single_run)
    samples = load_benchmark("synthetic", annotations, tiny_data_dir)
    assert [r["id"] for r in rows] == [s.id for s in samples]  # benchmark order, each once
    assert {"id", "prompt", "output", "prediction", "target", "score"} <= set(rows[0])
    for key in ("rec/acc@0.5", "vtg/r1@0.3", "vtg/r1@0.5", "vtg/r1@0.7", "vtg/miou",
                "sl/acc@0.5", "pope/accuracy", "pope/f1", "pope/yes_ratio"):  # fmt: skip
        assert f"test/{key}" in metrics, key
    assert metrics["samples/total"] == len(samples)
    per_task = {t: sum(r["task"] == t for r in rows) for t in TASK_FILES}
    assert {t: metrics[f"test/{t}/count"] for t in TASK_FILES} == per_task


def test_missing_media_is_skipped_counted_and_a_miss(single_run) -> None:
    metrics, rows = _read(single_run)
    skipped = [r for r in rows if r["skipped"]]
    assert [r["id"] for r in skipped] == ["rec_missing"]
    assert skipped[0]["output"] is None and skipped[0]["score"] == 0.0
    assert skipped[0]["prediction"] is None
    assert metrics["skipped/total"] == 1 and metrics["test/rec/skipped"] == 1
    assert metrics["skipped/missing_file"] == 1  # the reason is kept, not a generic "unreadable"
    assert (
        sum(v for k, v in metrics.items() if k.startswith("skipped/") and k != "skipped/total") == 1
    )


def test_metrics_agree_with_the_prediction_rows(single_run, tiny_data_dir, annotations) -> None:
    """Every metric is recomputable from predictions.jsonl, and every row from its output."""
    metrics, rows = _read(single_run)
    samples = {s.id: s for s in load_benchmark("synthetic", annotations, tiny_data_dir)}
    for row in rows:
        if not row["skipped"]:
            assert score(samples[row["id"]], row["output"])["score"] == pytest.approx(row["score"])
    for task, key, thr in (("rec", "acc@0.5", 0.5), ("sl", "acc@0.5", 0.5), ("vtg", "r1@0.3", 0.3)):
        scores = [r["score"] for r in rows if r["task"] == task]
        hits = sum(s >= thr for s in scores) / len(scores)
        assert metrics[f"test/{task}/{key}"] == pytest.approx(hits)
        assert metrics[f"test/{task}/miou"] == pytest.approx(sum(scores) / len(scores))
    pope = [r for r in rows if r["task"] == "pope"]
    acc = sum(r["score"] for r in pope) / len(pope)
    assert metrics["test/pope/accuracy"] == pytest.approx(acc)


def test_batched_generation_equals_one_sample_at_a_time(
    single_run, tmp_path, tiny_data_dir, ckpt, annotations
) -> None:
    """Left padding + KV cache in batches of 4 gives the answers of batches of 1."""
    files = [a for a in annotations if Path(a).name.startswith(("sl_", "vtg_"))]
    cfg = eval_cfg(tmp_path, tiny_data_dir, ckpt, files, "datamodule.batch_size=1",
                   "benchmark.limit=4")  # fmt: skip
    evaluate(cfg)  # image + sound and video samples, one at a time
    batched = {r["id"]: r["output"] for r in _read(single_run)[1]}
    alone = {r["id"]: r["output"] for r in _read(tmp_path / "run")[1]}
    assert {i.split("_")[0] for i in alone} == {"sl", "vtg"} and len(alone) == 4
    assert alone == {i: batched[i] for i in alone}


@pytest.mark.parametrize(
    "strategy",
    # fork starts in a second; spawn re-imports everything in fresh processes (slow)
    ["ddp_fork", pytest.param("ddp_spawn", marks=pytest.mark.slow)],
)
def test_two_processes_give_exactly_the_one_process_result(
    strategy, single_run, tmp_path, tiny_data_dir, ckpt, annotations
) -> None:
    """gloo, 2 CPU processes: the metrics (synced torchmetrics) and the gathered predictions
    are exactly those of one process; no sample is lost or counted twice."""
    cfg = eval_cfg(tmp_path, tiny_data_dir, ckpt, annotations,
                   "trainer.devices=2", f"+trainer.strategy={strategy}")  # fmt: skip
    evaluate(cfg)
    m1, rows1 = _read(single_run)
    m2, rows2 = _read(tmp_path / "run")
    drop = set(TIMING)
    assert {k: v for k, v in m2.items() if k not in drop} == {
        k: v for k, v in m1.items() if k not in drop
    }
    assert rows2 == rows1  # same set, same order, same outputs, no duplicates


# ------------------------------------------------------------------------------ datamodule


def test_dataset_reports_a_bad_sample_with_its_id(tmp_path) -> None:
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    good = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (200, 10, 10)).save(good)
    samples = [
        BenchmarkSample(
            "ok",
            "rec",
            {"image": str(good)},
            "<image>\nWhere?",
            [0, 0, 10, 10],
            {"width": 20, "height": 10},
        ),  # fmt: skip
        BenchmarkSample(
            "gone",
            "rec",
            {"image": str(tmp_path / "x.png")},
            "<image>\nWhere?",
            [0, 0, 10, 10],
            {"width": None, "height": None},
        ),  # fmt: skip
    ]
    dm = BenchmarkDataModule(tokenizer, {"name": "x"}, {"image": ImageProcessor(16)}, {"image": 4})
    ds = BenchmarkDataset(samples, dm.formatter, dm.processors, 128, positions=[7, 3])
    item, skip = ds[0], ds[1]
    assert isinstance(skip, Skipped) and skip.sample.id == "gone" and skip.index == 3
    assert "not found" in skip.reason
    batch = BenchmarkCollator(tokenizer.pad_token_id)([item, skip])
    assert batch["size"] == 1 and batch["index"] == [7] and batch["samples"][0].id == "ok"
    assert batch["skipped_samples"] == [skip]
    with pytest.raises(ValueError, match="not found"):
        BenchmarkDataset(samples, dm.formatter, dm.processors, 128, on_error="raise")[1]


def test_eval_config_reuses_the_training_processors(tmp_path) -> None:
    cfg = compose_config(["ckpt_path=x"], tmp_path, tmp_path / "run", config_name="eval")
    train = compose_config([], tmp_path, tmp_path / "run")
    with open_dict(cfg):
        assert cfg.datamodule.processors == train.data.processors
        assert "media_tokens" not in cfg.datamodule  # passed from the built model


def test_predict_returns_rows_without_metrics(tmp_path, tiny_data_dir, ckpt, annotations) -> None:
    files = [a for a in annotations if Path(a).name.startswith(("pope_", "rec_extra"))]
    cfg = eval_cfg(tmp_path, tiny_data_dir, ckpt, files)
    model, tokenizer = build_model(cfg, "ckpt_path")
    dm = build_datamodule(cfg.datamodule, model, tokenizer)
    evaluator = hydra.utils.instantiate(cfg.evaluator, model=model, tokenizer=tokenizer)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, use_distributed_sampler=False)
    rows = [r for batch in trainer.predict(evaluator, datamodule=dm) for r in batch]
    assert sorted(r["id"] for r in rows) == sorted(s.id for s in dm.dataset.samples)
    assert [r["id"] for r in rows if r["skipped"]] == ["rec_missing"]
    assert all(isinstance(r["output"], str) for r in rows if not r["skipped"])
    assert not (tmp_path / "run" / "metrics.json").exists()  # predict writes nothing
