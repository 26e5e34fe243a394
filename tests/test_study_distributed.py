"""A study under torchrun with 2 gloo ranks: a probe that fails on rank 0 fails the run on
every rank and the study goes on; probing longer than the training group's timeout is waited
for (`objbench.harness.ranks`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ddp_study_worker import PROBE_SECONDS, TRAINING_TIMEOUT

WORKER = Path(__file__).with_name("ddp_study_worker.py")


@pytest.mark.slow  # torchrun with 2 processes, one probe of 15 s: ~30 s
def test_ranks_share_a_failure_and_wait_for_rank_zero_s_probes(tmp_path):
    spec = {"name": "ddp", "reference": "mlm", "seeds": [0, 1], "budget": {"steps": 4},
            "arms": [{"name": "mlm", "objective": "mlm"}],
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 96},
            "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
            "train": {"batch_size": 8, "eval_points": 2, "threads": 1}, "tasks": {"flaky": {}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(WORKER), str(tmp_path / "study.yaml"), str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]

    for rank in (0, 1):  # every rank recorded the failure and went on to the next run
        assert json.loads((out / f"rank{rank}.json").read_text()) == {
            "ok": False, "runs": [{"seed": 0, "state": "failed"}, {"seed": 1, "state": "done"}]}
    failed = json.loads((out / "runs/mlm/seed0/status.json").read_text())
    assert failed["state"] == "failed" and failed["error"] == "RuntimeError: probe failed on rank 0"
    assert "probe failed on rank 0" in (out / "runs/mlm/seed0/error.log").read_text()
    assert "probe failed on rank 0" in (out / "report.md").read_text()

    finished = json.loads((out / "runs/mlm/seed1/status.json").read_text())
    assert finished["state"] == "done"
    assert finished["tasks_s"] >= PROBE_SECONDS > TRAINING_TIMEOUT.total_seconds()  # rank 1 waited it out
    rows = [json.loads(l) for l in (out / "runs/mlm/seed1/results.jsonl").read_text().splitlines()]
    assert [r["value"] for r in rows if r["task"] == "flaky"] == [2.0]  # probed while 2 ranks ran
    metrics = [json.loads(l) for l in (out / "runs/mlm/seed1/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]  # one writer
