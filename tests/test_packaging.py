"""A non-editable install: the wheel built from this checkout, installed into a fresh virtual
environment, imports from there and runs every subcommand from outside the checkout.

The fresh environment reaches this one's dependencies through a ``.pth`` file instead of
downloading them (torch alone is ~750 MB); this environment's own objbench, an editable
install, stays out of reach: its import hook is only activated from a site directory.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow  # builds and installs a wheel, then 8 CLI processes: ~40 s


def run(*cmd: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    source = root / "source"  # a copy: building writes build/ and *.egg-info/ next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "runs"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"),
        str(source), cwd=root, env=env)
    (wheel,) = (root / "dist").glob("objbench-*.whl")
    run(sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv"), cwd=root, env=env)
    python = root / "venv" / "bin" / "python"
    venv_site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                         cwd=root, env=env).strip())
    (venv_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel),
        cwd=root, env=env)  # --ignore-installed: the objbench seen through the .pth file is not ours
    return root / "venv" / "bin", env


def test_the_installed_package_is_the_wheel_and_holds_its_data(installed):
    bin_dir, env = installed
    where = run(str(bin_dir / "python"), "-c", "import objbench, objbench.bench.throughput, "
                "objbench.bench.pipeline, objbench.bench.gpu_check; print(objbench.__file__)",
                cwd=bin_dir, env=env).strip()
    package = Path(where).parent
    assert package.parent.name == "site-packages" and ROOT not in package.parents
    for data in ("studies/quickstart.yaml", "tasks/brown_universal.tsv", "bench/gpu_check.sh"):
        assert (package / data).is_file(), data


def test_every_subcommand_runs_from_the_wheel(installed, tmp_path):
    bin_dir, env = installed
    objbench = str(bin_dir / "objbench")
    listed = run(objbench, "objectives", cwd=tmp_path, env=env).splitlines()
    assert {"mlm", "clm", "masked-ar"} <= {line.split()[0] for line in listed}
    assert "pos" in run(objbench, "tasks", cwd=tmp_path, env=env)
    sets = [a for o in TINY for a in ("--set", o)]
    run(objbench, "train", "clm", "--out", "run", *sets, cwd=tmp_path, env=env)
    run(objbench, "probe", "run", "--task", "pos", "--set", "pos.max_train=20", "--set", "pos.max_validation=10",
        "--set", "pos.max_test=10", cwd=tmp_path, env=env)
    rows = [json.loads(line) for line in (tmp_path / "run/probe_results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"pos"}
    shipped = Path(run(str(bin_dir / "python"), "-c", "import objbench; print(objbench.__file__)",
                       cwd=tmp_path, env=env).strip()).parent / "studies" / "quickstart.yaml"
    assert "valid" in run(objbench, "study", "validate", str(shipped), cwd=tmp_path, env=env)
    spec = {"name": "wheel", "reference": "clm", "seeds": [0], "budget": {"steps": 2},
            "arms": [{"name": "clm", "objective": "clm"}], "tasks": {"agreement": {"max_per_phenomenon": 2}},
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 96},
            "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
            "train": {"batch_size": 8, "eval_points": 2, "threads": 1}}
    (tmp_path / "wheel.yaml").write_text(yaml.safe_dump(spec))
    run(objbench, "study", "run", "wheel.yaml", "--out", "study", cwd=tmp_path, env=env)
    (tmp_path / "study" / "report.md").unlink()
    run(objbench, "report", "study", cwd=tmp_path, env=env)
    assert "Study: wheel" in (tmp_path / "study" / "report.md").read_text()
