"""Every eval run records what it was computed on; a non-standard split is flagged."""

from __future__ import annotations

import hashlib
import json
import logging

from tests.conftest import compose_config
from tests.evaluation.fixtures import write_pope

from groundinggpt.evaluation.provenance import provenance, sha256_of_files


def test_a_non_standard_pope_file_is_evaluated_with_a_warning_and_its_checksum(
    tmp_path, tiny_weights, caplog
) -> None:
    from groundinggpt.evaluation.engine import evaluate

    folder, images = write_pope(tmp_path)
    random = folder / "coco_pope_random.json"
    cfg = compose_config(
        [f"ckpt_path={tiny_weights.ckpt}", "benchmark=pope", f"benchmark.annotation_file={random}",
         f"benchmark.media_dir={images}", "benchmark.split=random", "benchmark.max_new_tokens=2",
         "datamodule.num_workers=0"],
        tmp_path, tmp_path / "eval", "eval",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        evaluate(cfg)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["benchmark/samples_read"] == 4 and metrics["benchmark/standard_count"] == 3000
    assert metrics["benchmark/standard_split"] == 0
    digest = hashlib.sha256(random.name.encode() + random.read_bytes()).hexdigest()
    assert metrics["benchmark/annotation_sha256"] == digest
    assert "4 samples read, the standard split has 3000" in caplog.text


def test_the_standard_count_passes_quietly_and_folders_hash_every_file(tmp_path, caplog) -> None:
    folder, _ = write_pope(tmp_path)
    with caplog.at_level(logging.WARNING):
        info = provenance(
            {"name": "charades_sta", "split": "test", "annotation_file": folder}, 3720
        )
    assert info["benchmark/standard_split"] == 1 and not caplog.text
    before = sha256_of_files(folder)
    (folder / "coco_pope_popular.json").write_text("changed")
    assert sha256_of_files(folder) != before
    assert "benchmark/standard_count" not in provenance({"name": "synthetic"}, 16)
