"""Which datasets a stage reads (`plan_stage`) and where each modality's media lie."""

from __future__ import annotations

from pathlib import Path

import pytest

from groundinggpt.data.dataset import resolve_media_roots
from groundinggpt.data.mixture import plan_stage

STAGES = {
    "s1": {"img_cap": 1.0, "vid_cap": 1.0},
    "s2": {"rec": 1.0, "vtg": 2.0, "img_cap": 0.5},
    "s3": {"chat": 1.0, "rec": 0.0},
}
CATALOG = dict.fromkeys(["img_cap", "vid_cap", "rec", "vtg", "chat", "rec_val"], {})


def test_a_stage_trains_its_mixture_and_replays_what_earlier_stages_trained() -> None:
    plan = plan_stage(STAGES, "s3", CATALOG, val=["rec_val"], replay_ratio=0.05)
    assert plan.weights == {"chat": 1.0}  # weight 0 leaves rec out of s3's own mixture
    assert plan.splits["train"] == ["chat"]
    assert plan.splits["replay"] == ["img_cap", "vid_cap", "rec", "vtg"]  # first-seen order
    assert plan.splits["val"] == ["rec_val"] and plan.splits["test"] == []
    s2 = plan_stage(STAGES, "s2", CATALOG, replay_ratio=0.05)
    assert s2.splits["replay"] == ["vid_cap"]  # img_cap is trained by s2 itself
    assert plan_stage(STAGES, "s2", CATALOG, replay_ratio=0.0).splits["replay"] == []


def test_unknown_stages_and_datasets_fail_by_name() -> None:
    with pytest.raises(ValueError, match="'s9' has no mixture"):
        plan_stage(STAGES, "s9", CATALOG)
    with pytest.raises(ValueError, match=r"\['missing_val'\] are not in the data catalog"):
        plan_stage(STAGES, "s1", CATALOG, val=["missing_val"])


def test_media_roots_per_modality_with_a_dataset_override() -> None:
    mods = ["image", "video", "audio"]
    assert resolve_media_roots("data", mods) == dict.fromkeys(mods, Path("data"))
    base = resolve_media_roots({"image": "i", "video": "v", "audio": "a"}, mods)
    assert resolve_media_roots(base, mods, {"video": "/vids"})["video"] == Path("/vids")
    assert resolve_media_roots(base, mods, "/all") == dict.fromkeys(mods, Path("/all"))
    with pytest.raises(ValueError, match=r"no folder for modalities \['audio'\]"):
        resolve_media_roots({"image": "i", "video": "v"}, mods)
