"""No checkpoint runs code: resume, init_from, eval and infer load weights only; remote
checkpoints are refused unless allowed; non-finite weights are reported at load."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from groundinggpt.train import train
from groundinggpt.training.checkpoint import load_weights, resume_path


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def malicious(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    return path, marker


def test_resume_never_unpickles_code(make_cfg, malicious, monkeypatch) -> None:
    path, marker = malicious
    # even when the environment asks torch to default to full unpickling
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; the marker decides
        train(make_cfg(["experiment=stage2_fine", f"ckpt_path={path}"]))
    assert not marker.exists()


def test_init_from_and_eval_loading_never_unpickle_code(make_cfg, malicious) -> None:
    path, marker = malicious
    with pytest.raises(Exception):  # noqa: B017
        train(make_cfg(["experiment=stage2_fine", f"init_from={path}"]))
    with pytest.raises(Exception):  # noqa: B017 - eval.py and infer.py load through this
        load_weights(torch.nn.Linear(1, 1), path)
    assert not marker.exists()


def test_remote_checkpoints_are_refused_unless_allowed(make_cfg) -> None:
    url = "http://127.0.0.1:9/x.ckpt"
    with pytest.raises(ValueError, match="remote"):
        train(make_cfg(["experiment=stage2_fine", f"ckpt_path='{url}'"]))
    assert resume_path(url, allow_remote=True) == url
    with pytest.raises(ValueError, match="local files only"):
        load_weights(torch.nn.Linear(1, 1), url)


def test_non_finite_weights_are_reported_at_load(tmp_path, caplog) -> None:
    model = torch.nn.Linear(2, 2)
    state = {k: torch.full_like(v, float("nan")) for k, v in model.state_dict().items()}
    path = tmp_path / "nan.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    holder = torch.nn.Module()
    holder.llm = model  # load_weights expects the grounding model's `llm` attribute
    with caplog.at_level(logging.WARNING):
        load_weights(holder, path, strict=False)
    assert "hold NaN/inf" in caplog.text


def test_a_run_that_would_make_no_optimizer_step_fails(make_cfg) -> None:
    cfg = make_cfg(["experiment=stage2_fine"])
    cfg.data.batch_size = 1000  # more than the whole (tiny) epoch: drop_last leaves nothing
    with pytest.raises(ValueError, match="no optimizer step"):
        train(cfg)


def test_wrong_checkpoint_files_get_errors_that_name_them(tmp_path) -> None:
    from safetensors.torch import save_file

    named_ckpt = tmp_path / "weights.ckpt"
    save_file({"w": torch.zeros(2)}, str(named_ckpt))
    with pytest.raises(ValueError, match="is a safetensors file"):
        load_weights(torch.nn.Linear(1, 1), named_ckpt)
    listed = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=r"list.ckpt: a checkpoint holds a dict"):
        load_weights(torch.nn.Linear(1, 1), listed)
