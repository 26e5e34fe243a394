"""One process, two DDP processes (gloo) and gradient accumulation train the same model; resume.

Every process runs the real ``Trainer``, which reads rank and world size from
torch.distributed. All DDP scenarios share one spawn, since starting processes costs more
than the tiny runs.
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

from objbench.harness import trainer as trainer_mod
from objbench.harness.checkpoint import checkpoints
from objbench.harness.config import RunConfig, apply_overrides, validate
from objbench.harness.trainer import Trainer
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # 11 single-process runs and a 2-process spawn: ~20 s

WORLD = 2
# one thread per rank (2 ranks on 2 cores); the single-process references use the same setting
OVERRIDES = ["train.threads=1", "train.checkpoint_every=1"]
STOP_AT = 2
OBJECTIVES = ("clm", "mlm", "masked-ar", "mixture", "schedule")  # composites: their defaults
# max |w_a - w_b| over every weight after 4 steps of 8 rows; see the docstring of
# test_world_size_and_accumulation_do_not_change_the_model for where the number comes from
WEIGHT_TOL = 2e-5


class Stop(Exception):
    pass


def config(objective: str, *extra: str) -> RunConfig:
    return validate(RunConfig, apply_overrides({"objective": objective}, [*TINY, *OVERRIDES, *extra]))


def stop_at(t: Trainer) -> None:
    if t.counters.step == STOP_AT:  # every rank stops at the same step, as a crash with a restart would
        raise Stop


def _worker(rank: int, store: str, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        root_ = Path(root)
        for objective in OBJECTIVES:
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


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Single-process references (plain and with grad_accum 2), a control whose masks are drawn
    from other seeds, then every DDP scenario in one 2-process spawn."""
    root = tmp_path_factory.mktemp("ddp")
    for objective in OBJECTIVES:
        Trainer(config(objective), root / f"single-{objective}", progress=False).run()
        Trainer(config(objective, "train.grad_accum=2"), root / f"accum-{objective}", progress=False).run()
    real = trainer_mod.row_seeds
    with pytest.MonkeyPatch.context() as patch:  # the same run with every mask drawn anew
        patch.setattr(trainer_mod, "row_seeds", lambda seed, step, n: real(seed + 1000, step, n))
        Trainer(config("mlm"), root / "other-masks-mlm", progress=False).run()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(root / "store"), str(root)), nprocs=WORLD, join=True)
    return root


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_world_size_and_accumulation_do_not_change_the_model(runs, objective):
    """Each row draws its masks from (seed, step, its index in the global batch), so the three
    runs compute the same gradients up to the order in which fp32 adds them up.

    Tolerance, from fp32 summation order: a weight's gradient sums one term per position
    (~260 per step here); two ranks or two micro-batches add two partial sums instead of one
    long sum. Reassociating n terms moves the result by about sqrt(n) u sum|g_i|, u = 2^-24:
    a relative error of ~1e-6 times the sum's condition number k = sum|g_i| / |sum g_i|. AdamW
    divides each gradient by its running magnitude, so the update moves by lr * k * 1e-6 per
    step: with lr = 2e-3 and k up to ~100 (weights whose terms largely cancel), about 2e-7;
    over four steps, each reading weights that already differ, about 1e-6 (measured: at most
    1.3e-6 for every objective, DDP and accumulation alike). WEIGHT_TOL = 2e-5 leaves a 15x
    margin for k beyond that and is 350x below what drawing other masks does (7e-3, checked
    by test_the_tolerance_is_far_below_what_other_masks_do)."""
    single, ddp, accum = (runs / f"{kind}-{objective}" for kind in ("single", "ddp", "accum"))
    a, b, c = metrics(single), metrics(ddp), metrics(accum)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [r["step"] for r in c] == [0, 1, 2, 3, 4]
    for ra, rb, rc in zip(a, b, c, strict=True):
        for key in ("tokens", "input_tokens", "targets", "flops"):
            assert ra[key] == rb[key] == rc[key], key  # the same rows and masks: equal counts
        for key in ("loss", "val_loss", *(k for k in ra if k.startswith(("loss/", "val_loss/")))):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5), (key, ra["step"])
                assert rc[key] == pytest.approx(ra[key], rel=1e-5), (key, ra["step"])
    assert max_difference(single, ddp) < WEIGHT_TOL
    assert max_difference(single, accum) < WEIGHT_TOL


def test_the_tolerance_is_far_below_what_other_masks_do(runs):
    """The same data, init and schedule with other masks moves the weights 100x the tolerance:
    a draw that depended on the rank or micro-batch would fail the test above."""
    assert max_difference(runs / "single-mlm", runs / "other-masks-mlm") > 100 * WEIGHT_TOL


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
