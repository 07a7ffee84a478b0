"""notebooks/demo.ipynb runs top to bottom on a tiny training run and shows its pictures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from groundinggpt.train import train

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "demo.ipynb"


@pytest.mark.timeout(300)
def test_demo_notebook_executes_and_shows_curve_predictions_and_answer(make_cfg, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (Jupyter)")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (Jupyter)")
    cfg = make_cfg(["experiment=stage2_fine"], output="run")
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2  # two validation points: a curve
        cfg.data.eval_batch_size = 16  # one batch with every task (the notebook asks a rec one)
    train(cfg)
    run = tmp_path / "run"
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["GROUNDINGGPT_RUN"] = str(run)
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=240,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        client.execute()
    finally:
        del os.environ["GROUNDINGGPT_RUN"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # predictions, learning curves, the answer picture
    texts = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "model:" in texts and "truth:" in texts
