"""The benches run end to end at tiny sizes, and their numbers hold together: every derived
number is what its parts give, FLOPs are what flops.py counts, and nothing is ever timed here."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import torch

from objbench.bench import gpu_check, pipeline, throughput
from objbench.harness.flops import train_flops
from tests.conftest import ROOT

@pytest.fixture(autouse=True)
def restore_threads():
    """The benches set torch's thread count (one here: tiny models on a shared 2-core machine
    spend their time waiting for a descheduled second thread); later tests get theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_throughput_tiny_rounds_hold_together(tmp_path):
    out = tmp_path / "t.json"
    throughput.main(["--size", "tiny", "--rounds", "2", "--warmup", "1", "--threads", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    size, cfg = throughput.SIZES["tiny"], res["config"]
    assert set(res["contenders"]) == {"ob-mlm", "hf-bert", "hf-bert-default", "ob-clm", "hf-gpt2",
                                      "hf-gpt2-default", "ob-mar-0.15", "ob-mar-1.0", "ob-mntp", "ob-electra",
                                      "ob-electra-generator", "ob-mlm-0.5", "ob-mdlm"}
    assert len(res["peak_flops"]) == len(res["load_1min_per_round"]) == 2
    peak = max(res["peak_flops"])
    B, T = size.batch, size.block
    for name, c in res["contenders"].items():
        for tokens_per_s, step_s in zip(c["tokens_per_s"], c["step_s"], strict=True):
            assert tokens_per_s * step_s == pytest.approx(cfg["tokens_per_step"])  # B x T clean tokens
        assert c["tokens_per_s_min"] <= c["tokens_per_s_median"] <= c["tokens_per_s_max"]
        assert c["step_s_median"] == pytest.approx(statistics.median(c["step_s"]))
        flops = [mfu * s * peak for mfu, s in zip(c["useful_mfu_per_round"], c["step_s"], strict=True)]
        assert statistics.mean(flops) == pytest.approx(c["useful_flops_per_step"])  # MFU = FLOPs / s / peak
        assert c["dropout"] == (0.1 if name.endswith("default") else 0.0)
        executed, useful = c["executed_flops_per_step"], c["useful_flops_per_step"]
        assert executed == useful if c["side"] == "objbench" else executed > useful
    model = size.model()
    clm = res["contenders"]["ob-clm"]
    assert clm["useful_flops_per_step"] == train_flops(model, size.vocab, B, T, B * T)  # [CLS] t1..t(T-1)
    assert res["contenders"]["hf-gpt2"]["useful_flops_per_step"] == train_flops(model, size.vocab, B, T, B * (T - 1))
    assert res["contenders"]["ob-mar-1.0"]["useful_flops_per_step"] > clm["useful_flops_per_step"]  # part A, [E]
    for comp in res["comparisons"]:
        a, b = res["contenders"][comp["a"]], res["contenders"][comp["b"]]
        per_round = ([x / y for x, y in zip(a["tokens_per_s"], b["tokens_per_s"])] if comp["how"] == "speedup"
                     else [x / y for x, y in zip(a["step_s"], b["step_s"])])
        assert comp["per_round"] == pytest.approx(per_round) and comp["median"] == pytest.approx(
            statistics.median(per_round))
    assert {(c["a"], c["b"]) for c in res["comparisons"]} == {(a, b) for a, b, _, _ in throughput.COMPARISONS}
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


@pytest.mark.slow  # starts 1 training process and times reading: ~10 s
def test_pipeline_tiny_numbers_hold_together(tmp_path):
    out = tmp_path / "p.json"
    pipeline.main(["--size", "tiny", "--threads", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    tok = res["tokenization"]
    assert tok["documents"] == 100 and tok["tokens"] % 32 == 0  # whole 32-token blocks of 100 PTB docs
    assert tok["tokens_per_s_best"] * min(tok["seconds"]) == pytest.approx(tok["tokens"])
    assert tok["tokens_per_s_best"] >= tok["tokens_per_s_median"]
    runs = res["startup"]["runs"]
    assert res["startup"]["first_step_s_min"] == min(r["first_step_s"] for r in runs)
    assert all(r["first_step_s"] < r["total_s"] for r in runs)
    assert res["memory"]["peak_rss_mib_max"] == max(r["peak_rss_mib"] for r in runs)
    assert res["memory"]["peak_rss_mib_max"] > 150  # a Python process with torch imported holds more
    reading = res["reading"]
    for part in ("features", "score"):
        r = reading[part]
        assert r["sentences_per_s_best"] * min(r["seconds"]) == pytest.approx(reading["sentences"])
        assert r["tokens_per_s_best"] * min(r["seconds"]) == pytest.approx(reading["tokens"])
    assert reading["sentences"] == 12 and reading["tokens"] >= 5 * 12  # sentences of 5+ words
    probes = res["probes"]
    assert probes["classes"] == 12 and probes["features"] == 32  # universal tags, d_model
    assert probes["scikit-learn"]["best_s"] == min(probes["scikit-learn"]["seconds"])
    assert 0.5 < probes["agreement"] <= 1.0  # the same optimum, approached by two solvers


def test_gpu_check_dry_run_on_cpu(tmp_path):
    out = tmp_path / "g.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--threads", "1", "--track-steps", "20",
                           "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bf16"]["ok"] and res["leakage"]["ok"]
    assert set(res["leakage"]["objectives"]) >= {"mlm", "clm", "masked-ar", "mntp", "electra", "mdlm"}
    t = res["throughput"]
    assert len(t["arms"]) == 4
    for arm in t["arms"].values():
        seconds = t["steps"] * arm["step_ms"] / 1000
        assert arm["useful_mfu"] == pytest.approx(arm["useful_flops_per_step"] * t["steps"] / seconds
                                                  / t["bf16_peak_flops"])
        assert arm["tokens_per_s"] * arm["step_ms"] / 1000 == pytest.approx(
            gpu_check.SIZES["tiny"]["batch"] * gpu_check.SIZES["tiny"]["block"])


def test_gpu_check_says_clearly_when_there_is_no_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main(["--device", "cuda"]) == 3
    script = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert script.returncode == 3, script.stderr
    assert "no NVIDIA GPU" in script.stderr or "no CUDA device" in script.stderr, script.stderr
