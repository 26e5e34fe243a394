"""DistributedDataParallel on CPU (gloo, 2 processes): same trajectory as one process, and resume.

Both ranks run the real ``Trainer``, which reads rank and world size from torch.distributed.
All DDP scenarios share one spawn, since starting processes costs more than the tiny runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from objbench.harness.checkpoint import checkpoints
from objbench.harness.config import RunConfig, apply_overrides, validate
from objbench.harness.trainer import Trainer
from tests.conftest import TINY

WORLD = 2
# one thread per rank (2 ranks on 2 cores); the single-process reference uses the same setting
OVERRIDES = ["train.threads=1", "train.checkpoint_every=1"]
STOP_AT = 2


class Stop(Exception):
    pass


def config(objective: str) -> RunConfig:
    return validate(RunConfig, apply_overrides({"objective": objective}, [*TINY, *OVERRIDES]))


def stop_at(t: Trainer) -> None:
    if t.counters.step == STOP_AT:  # every rank stops at the same step, as a crash with a restart would
        raise Stop


def _worker(rank: int, store: str, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        root_ = Path(root)
        for objective in ("clm", "mlm"):
            Trainer(config(objective), root_ / f"ddp-{objective}", progress=False).run()
        try:
            Trainer(config("clm"), root_ / "ddp-clm-cut", callbacks=[stop_at], progress=False).run()
        except Stop:
            pass
        if rank == 0:
            (root_ / "cut.json").write_text(json.dumps(_steps(root_ / "ddp-clm-cut")))
        dist.barrier()
        Trainer(config("clm"), root_ / "ddp-clm-cut", progress=False).run()
    finally:
        dist.destroy_process_group()


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("tokens_per_s", None)  # wall clock
    return rows


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run)[-1] / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Single-process references, then every DDP scenario in one 2-process spawn."""
    root = tmp_path_factory.mktemp("ddp")
    for objective in ("clm", "mlm"):
        Trainer(config(objective), root / f"single-{objective}", progress=False).run()  # also warms the data cache
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(root / "store"), str(root)), nprocs=WORLD, join=True)
    return root


def test_ddp_clm_trajectory_matches_one_process(runs):
    """clm draws no randomness, so two ranks with 4 blocks each are one process with 8 blocks, up
    to float summation order (gradients all-reduced instead of summed in one matmul)."""
    single, ddp = metrics(runs / "single-clm"), metrics(runs / "ddp-clm")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [0, 1, 2, 3, 4]
    for a, b in zip(single, ddp, strict=True):
        for key in ("tokens", "input_tokens", "targets", "flops"):
            assert a[key] == b[key], key
        for key in ("loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a["step"])
    wa, wb = weights(runs / "single-clm"), weights(runs / "ddp-clm")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5, rtol=0) for k in wa)


def test_ddp_mlm_trajectory_tracks_one_process(runs):
    """mlm seeds its masks per (step, rank), so ranks draw other masks than one process does:
    the same data, different 15% of positions. Losses then agree to sampling noise only."""
    single, ddp = metrics(runs / "single-mlm"), metrics(runs / "ddp-mlm")
    assert [r["tokens"] for r in ddp] == [r["tokens"] for r in single]
    assert ddp[0]["val_loss"] == pytest.approx(single[0]["val_loss"], rel=1e-6)  # same init, same val masks
    for a, b in zip(single[1:], ddp[1:], strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.1, a["step"]  # ~ln(1000) = 6.9 nats at this point


def test_ddp_resume_ends_identical_to_uninterrupted(runs):
    assert json.loads((runs / "cut.json").read_text())[-1] == STOP_AT  # it really stopped early
    assert metrics(runs / "ddp-clm-cut") == metrics(runs / "ddp-clm")
    a, b = weights(runs / "ddp-clm"), weights(runs / "ddp-clm-cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_only_rank_zero_writes(runs):
    """Every metrics line once (two writers would double them); one checkpoint per eval point."""
    for run in ("ddp-clm", "ddp-mlm", "ddp-clm-cut"):
        steps = _steps(runs / run)
        assert steps == sorted(set(steps)), run
        assert not list((runs / run / "checkpoints").glob("*.tmp")), run
