"""The benches run end to end at tiny sizes and return well-formed numbers (never timed here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from objbench.bench import gpu_check, pipeline, throughput
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def restore_threads():
    """The benches set torch's thread count (one here: tiny models on a shared 2-core machine
    spend their time waiting for a descheduled second thread); later tests get theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_throughput_tiny_round(tmp_path):
    out = tmp_path / "t.json"
    throughput.main(["--size", "tiny", "--rounds", "1", "--warmup", "1", "--threads", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert set(res["contenders"]) == {"ob-mlm", "hf-bert", "hf-bert-default", "ob-clm", "hf-gpt2",
                                      "hf-gpt2-default", "ob-mar-0.15", "ob-mar-1.0", "ob-mntp", "ob-electra",
                                      "ob-electra-generator", "ob-mlm-0.5", "ob-mdlm"}
    for name, c in res["contenders"].items():
        for key in ("tokens_per_s_min", "tokens_per_s_median", "tokens_per_s_max", "step_s_median",
                    "useful_flops_per_step", "executed_flops_per_step", "useful_mfu"):
            assert positive(c[key]), (name, key)
        assert c["executed_flops_per_step"] >= c["useful_flops_per_step"]
        assert c["dropout"] == (0.1 if name.endswith("default") else 0.0)
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {(a, b) for a, b, _, _ in throughput.COMPARISONS}
    assert all(positive(c["median"]) and len(c["per_round"]) == 1 for c in res["comparisons"])
    assert all(positive(p) for p in res["peak_flops"])
    assert res["versions"]["transformers"] != "not installed" and res["cpu"]


def test_objbench_counts_the_same_useful_flops_as_the_hf_contender():
    """Same blocks, same size: mlm and BERT differ only in which 15% are masked; clm and GPT-2
    by the one position GPT-2 does not predict (its labels are shifted inside the model)."""
    size = throughput.SIZES["tiny"]
    cs = {c.name: c for c in throughput.build_contenders(size, 1, ["ob-clm", "hf-gpt2"])}
    ob, hf = cs["ob-clm"].step(), cs["hf-gpt2"].step()
    head_per_target = 3 * 2 * size.d_model * size.vocab
    assert ob[0] - hf[0] == head_per_target * size.batch  # one target more per row
    assert hf[1] == ob[1]  # GPT-2 executes the head at every position, as clm does


def test_pipeline_tiny(tmp_path):
    out = tmp_path / "p.json"
    pipeline.main(["--size", "tiny", "--threads", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert positive(res["tokenization"]["tokens_per_s_best"]) and res["tokenization"]["tokens"] > 0
    assert positive(res["startup"]["first_step_s_min"])
    assert all(r["first_step_s"] < r["total_s"] for r in res["startup"]["runs"])
    assert positive(res["memory"]["peak_rss_mib_max"])
    for part in ("features", "score"):
        assert positive(res["reading"][part]["sentences_per_s_best"])
    assert res["reading"]["sentences"] > 0


def test_gpu_check_dry_run_on_cpu(tmp_path):
    out = tmp_path / "g.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--threads", "1", "--track-steps", "20",
                           "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bf16"]["ok"] and res["leakage"]["ok"]
    assert set(res["leakage"]["objectives"]) >= {"mlm", "clm", "masked-ar", "mntp", "electra", "mdlm"}
    arms = res["throughput"]["arms"]
    assert len(arms) == 4 and all(positive(a["tokens_per_s"]) and positive(a["useful_mfu"]) for a in arms.values())


def test_gpu_check_says_clearly_when_there_is_no_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main(["--device", "cuda"]) == 3
    script = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert script.returncode == 3, script.stderr
    assert "no NVIDIA GPU" in script.stderr or "no CUDA device" in script.stderr, script.stderr
