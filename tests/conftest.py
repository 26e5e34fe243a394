"""Test-wide setup: offline hubs, and the example third-party objective and task installed for real.

The example packages are pip-installed into a temporary folder that joins ``sys.path`` before
collection, so entry-point discovery finds them exactly as it would in a user's environment,
and every test parametrized over a registry covers them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / "objbench-reverse-lm", ROOT / "examples" / "objbench-proper-nouns"]


def pytest_configure(config) -> None:
    import torch

    # one thread: tiny models gain nothing from a second one, and on a shared machine a
    # descheduled second thread stalls every op (runs measured 10-30x slower under load)
    torch.set_num_threads(1)
    target = Path(tempfile.mkdtemp(prefix="objbench-plugins-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), *map(str, EXAMPLES)],
                   check=True, capture_output=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])


import pytest  # noqa: E402

TINY = [
    "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64", "model.max_len=160",
    "data.corpus=ptb", "data.vocab_size=1000", "data.block_size=32", "data.val_blocks=8",
    "train.batch_size=8", "train.eval_points=2", "train.threads=1", "budget.steps=4",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Train (once per session and objective) a tiny model on PTB; returns its run folder."""
    from objbench.harness.config import RunConfig, apply_overrides, validate
    from objbench.harness.trainer import Trainer

    made: dict[tuple, Path] = {}

    def make(objective: str = "mlm", *overrides: str) -> Path:
        key = (objective, *overrides)
        if key not in made:
            out = tmp_path_factory.mktemp(f"run-{objective}")
            cfg = validate(RunConfig, apply_overrides({"objective": objective}, [*TINY, *overrides]))
            Trainer(cfg, out, progress=False).run()
            made[key] = out
        return made[key]

    return make


REAL_ARCHIVES = Path(os.environ.get("OBJBENCH_CACHE", Path.home() / ".cache" / "objbench")) / "archives"


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """A fresh objbench cache for one module whose archives are the real, already fetched ones."""
    root = tmp_path_factory.mktemp("objbench-cache")
    REAL_ARCHIVES.mkdir(parents=True, exist_ok=True)
    (root / "archives").symlink_to(REAL_ARCHIVES, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OBJBENCH_CACHE", str(root))
        yield root
