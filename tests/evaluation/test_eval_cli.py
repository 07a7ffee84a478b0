"""The eval.py / infer.py command lines: every benchmark config composes; real subprocess runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from PIL import Image
from tests.conftest import CONFIG_DIR, compose_config

from groundinggpt.evaluation.datamodule import BenchmarkDataModule, _loader_kwargs
from groundinggpt.modalities import SPECIAL_TOKENS

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p.stem for p in Path(CONFIG_DIR, "benchmark").glob("*.yaml"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_composes_into_an_eval_run(name, tmp_path) -> None:
    cfg = compose_config([f"benchmark={name}", "ckpt_path=x"], tmp_path, tmp_path / "o", "eval")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})  # as the model
    dm = hydra.utils.instantiate(
        cfg.datamodule, tokenizer=tokenizer, media_tokens={"image": 64}, _convert_="all"
    )
    assert isinstance(dm, BenchmarkDataModule)
    kwargs = _loader_kwargs(dm.benchmark)
    assert kwargs["name"] == cfg.benchmark.name
    assert {"annotation_file", "media_dir"} <= set(kwargs)
    assert cfg.evaluator.generation.max_new_tokens == cfg.benchmark.max_new_tokens


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    from groundinggpt.build import build_model

    cfg = compose_config([f"ckpt_path={tmp_path}/nope.ckpt"], tmp_path, tmp_path / "o", "eval")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_model(cfg, "ckpt_path")


# ------------------------------------------------------------------- subprocess (slow) runs


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_weights) -> Path:
    return tiny_weights.ckpt


def _run(script: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_eval_py_writes_metrics_predictions_and_a_table(tmp_path, tiny_data_dir, tiny_ckpt):
    run = tmp_path / "run"
    ann = tiny_data_dir / "annotations"
    files = ",".join(str(ann / f"{t}_test.json") for t in ("rec", "vtg", "sl", "pope"))
    proc = _run("eval.py", [
        f"ckpt_path={tiny_ckpt}", f"benchmark.annotation_file=[{files}]",
        f"benchmark.media_dir={tiny_data_dir}", "benchmark.max_new_tokens=6",
        "datamodule.num_workers=0", f"hydra.run.dir={run}",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    rows = (run / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == metrics["samples/total"] == 16
    assert "test/rec/acc@0.5" in proc.stdout and "test/pope/f1" in proc.stdout


@pytest.mark.slow
def test_infer_py_chat_on_stdin(tmp_path, tiny_ckpt):
    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 30), (30, 120, 200)).save(photo)
    run = tmp_path / "run"
    proc = _run("infer.py", [
        f"ckpt_path={tiny_ckpt}", f"image={photo}", "chat=true",
        "assistant.generation.max_new_tokens=4", f"hydra.run.dir={run}",
    ], stdin="Where is the sky?\nAnd now?\nexit\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("answer:") == 2
    assert (run / "answer_01.png").is_file() and (run / "answer_02.png").is_file()
