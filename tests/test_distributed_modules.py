"""An objective's own modules under DistributedDataParallel (gloo, 2 CPU processes): ELECTRA's
generator and head receive the same averaged gradients on both ranks, so they stay equal."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from objbench.harness.checkpoint import MODULES_PREFIX, checkpoints
from objbench.harness.config import RunConfig, apply_overrides, validate
from objbench.harness.trainer import Trainer
from tests.conftest import TINY

WORLD = 2


def config() -> RunConfig:
    return validate(RunConfig, apply_overrides({"objective": "electra"}, [*TINY, "train.threads=1", "budget.steps=3"]))


def digest(tensors: dict) -> str:
    return hashlib.sha256(b"".join(tensors[k].detach().contiguous().numpy().tobytes() for k in sorted(tensors))).hexdigest()


def _worker(rank: int, store: str, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        trainer = Trainer(config(), Path(root) / "run", progress=False)
        initial = digest(trainer.objective_modules.state_dict())
        trainer.run()
        (Path(root) / f"rank{rank}.sha").write_text(f"{initial} {digest(trainer.objective_modules.state_dict())}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp-modules")
    Trainer(config(), root / "warm", progress=False).run()  # prepares the data cache once, before the ranks
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(root / "store"), str(root)), nprocs=WORLD, join=True)
    return root


def test_modules_train_stay_equal_on_every_rank_and_are_checkpointed(root):
    (init0, final0), (init1, final1) = ((root / f"rank{r}.sha").read_text().split() for r in range(WORLD))
    saved = load_file(str(checkpoints(root / "run")[-1] / "model.safetensors"))
    own = {k[len(MODULES_PREFIX):]: v for k, v in saved.items() if k.startswith(MODULES_PREFIX)}
    assert init0 == init1 and final0 == final1 == digest(own)
    assert final0 != init0  # trained, not merely left alone on both ranks
