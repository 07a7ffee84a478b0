"""The installed console commands work from any folder, with the configs shipped in the package
and a user's own config folder on Hydra's search path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _command(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.skip(f"{name} is not installed: pip install -e . (it creates the console scripts)")
    return str(path)


def test_train_command_runs_from_another_folder(tiny_data_dir, tmp_path) -> None:
    cmd = [
        _command("groundinggpt-train"), "experiment=stage2_fine", "debug=fast",
        f"data.root={tiny_data_dir}", "data.synthetic=null", "data.batch_size=2",
        "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["trainer/global_step"] == 2


def test_a_users_config_folder_joins_the_shipped_groups(tmp_path) -> None:
    mine = tmp_path / "my_configs" / "experiment"
    mine.mkdir(parents=True)
    (mine / "my_exp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /stage: stage3_instruct\n"
        "task_name: my_exp\nstage:\n  lr: 1.234e-4\n"
    )
    cmd = [
        _command("groundinggpt-train"), f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]",
        "experiment=my_exp", "--cfg", "job", "--resolve",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task_name: my_exp" in proc.stdout and "0.0001234" in proc.stdout
    assert "name: stage3_instruct" in proc.stdout


@pytest.mark.timeout(400)
def test_the_wheel_carries_every_config_and_trains_from_an_empty_folder(
    tmp_path, tiny_data_dir
) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=280, cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools builds in the checkout
    wheel = next(tmp_path.glob("groundinggpt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "groundinggpt/configs/" + str(p.relative_to(REPO / "src/groundinggpt/configs"))
        for p in (REPO / "src/groundinggpt/configs").rglob("*.yaml")
    }
    assert shipped and shipped <= names, sorted(shipped - names)[:5]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command in ("train", "eval", "infer", "demo", "convert"):
        assert f"groundinggpt-{command} =" in text

    # `pip install` of the wheel (its own folder, the dependencies of this environment), then
    # the console command from an empty folder: the package and its configs come from the wheel
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
    env["PYTHONPATH"] = str(target)
    where = subprocess.run(
        [sys.executable, "-c", "import groundinggpt.cli as c, groundinggpt.configs as g; "
         "print(c.__file__); print(g.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(line.startswith(str(target)) for line in where.stdout.split())
    proc = subprocess.run(
        [str(target / "bin" / "groundinggpt-train"), "experiment=stage2_fine", "debug=fast",
         f"data.root={tiny_data_dir}", "data.synthetic=null", "data.batch_size=2",
         "trainer.limit_train_batches=2"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((empty / "outputs").rglob("metrics.json"))  # run outputs land in that folder
