"""The field's tools on exported models: minicons' scorers and lm-evaluation-harness give
objbench's own sentence scores (the optional extra objbench[export])."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from objbench.harness.export import export_run
from objbench.harness.reading import TrainedModel

# lower case, as the tiny runs' corpus (PTB) is: few [UNK]s, so no pair ties
SENTENCES = ["the company said its profit rose .", "the company said its profit rise .",
             "mr. smith , N years old , will join the board as a director in november .", "it fell ."]
PAIRS = [("the shares were sold .", "the shares was sold ."),
         ("he says the deal is done .", "he say the deal is done ."),
         ("these bonds are safe .", "this bonds are safe ."),
         ("the banks have lost money .", "the banks has lost money .")]


def sum_of(scores):
    return scores.sum(0).item()


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    def make(objective: str) -> tuple[TrainedModel, Path]:
        run = tiny_run(objective)
        folder = export_run(run, tmp_path_factory.mktemp(objective) / "hf")
        return TrainedModel(run, device="cpu"), folder
    return make


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_minicons_scores_are_objbench_scores(objective, exported):
    """mlm: minicons' masked scorer's pseudo-log-likelihood; clm: its incremental scorer's
    log-likelihood (the tokenizer puts [CLS], the BOS, in front; minicons scores what follows)."""
    scorer = pytest.importorskip("minicons.scorer", reason="minicons is in the optional extra "
                                 "objbench[export] (./setup.sh installs it)")
    from transformers import AutoTokenizer

    ours, folder = exported(objective)
    expected, _ = ours.score(SENTENCES)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    if objective == "mlm":
        lm = scorer.MaskedLMScorer(str(folder), "cpu", tokenizer=tokenizer, trust_remote_code=True)
        # minicons 0.3.39 encodes text with batch_encode_plus, which transformers 5 removed;
        # it scores an encoded batch as given
        got = lm.sequence_score(tokenizer(SENTENCES, padding="longest"), reduction=sum_of)
    else:
        lm = scorer.IncrementalLMScorer(str(folder), "cpu", tokenizer=tokenizer, trust_remote_code=True)
        got = lm.sequence_score(SENTENCES, reduction=sum_of)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_lm_eval_runs_offline_on_a_local_task(exported, tmp_path):
    """README's command on a local minimal-pair task: each sentence's log-likelihood is
    objbench's, and the accuracy is the share of pairs objbench scores the right way round."""
    pytest.importorskip("lm_eval", reason="lm-eval is in the optional extra objbench[export] "
                        "(./setup.sh installs it)")
    ours, folder = exported("clm")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"good": g, "bad": b}) + "\n" for g, b in PAIRS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "pairs.yaml").write_text(yaml.safe_dump({
        "task": "objbench_pairs", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
        "output_type": "multiple_choice", "doc_to_text": "", "target_delimiter": "",
        "doc_to_choice": "{{[good, bad]}}", "doc_to_target": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}))
    results = tmp_path / "results"
    command = [str(Path(sys.executable).with_name("lm-eval")), "run", "--model", "hf",
               "--model_args", f"pretrained={folder},trust_remote_code=True",
               "--tasks", "objbench_pairs", "--include_path", str(tasks), "--device", "cpu",
               "--batch_size", "8", "--output_path", str(results), "--log_samples"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    (samples,) = results.glob("*/samples_objbench_pairs_*.jsonl")
    docs = [json.loads(line) for line in samples.read_text().splitlines()]
    got = np.array([[float(r[0]) for r in d["filtered_resps"]] for d in docs])
    good, _ = ours.score([g for g, _ in PAIRS])
    bad, _ = ours.score([b for _, b in PAIRS])
    np.testing.assert_allclose(got, np.stack([good, bad], 1), atol=1e-4, rtol=0)
    # a near tie (the tokenizer, trained anew on each machine, decides the tiny model) may go
    # either way in lm-eval's float32: every decided pair must go objbench's way
    theirs, decided = got.argmax(1) == 0, ~np.isclose(good, bad, atol=1e-3)
    assert decided.sum() >= len(PAIRS) - 1
    np.testing.assert_array_equal(theirs[decided], (good > bad)[decided])
    (summary,) = results.glob("*/results_*.json")
    acc = json.loads(summary.read_text())["results"]["objbench_pairs"]["acc,none"]
    assert acc == pytest.approx(theirs.mean())
