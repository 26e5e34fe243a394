"""`objbench score`: per-token and per-word log-probabilities under a run's own scoring, and
one-line errors for what it cannot score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from objbench.harness.cli import main
from objbench.harness.reading import TrainedModel
from objbench.harness.surprisal import read_sentences, score_sentences

SENTENCES = ["The unbelievably large company said it'll grow.", "Shares fell"]


def test_token_log_probs_are_the_next_token_log_probs_and_words_sum_them(tiny_run):
    model = TrainedModel(tiny_run("clm"))
    scored = score_sentences(model, SENTENCES)
    totals, _ = model.score(SENTENCES)
    for s, total in zip(scored, totals):
        ids = model.ids(s.text)
        x = torch.tensor([[model.vocab["[CLS]"], *ids]])
        with torch.no_grad():
            hidden = model.model(x, "causal", None, torch.zeros_like(x))
            logp = torch.log_softmax(model.model.logits(hidden).double(), -1)
        np.testing.assert_allclose(s.token_logprobs, [float(logp[0, i, t]) for i, t in enumerate(ids)], atol=1e-4)
        assert s.total == pytest.approx(total, abs=1e-4) and sum(s.word_logprobs) == pytest.approx(s.total)
        assert s.words == s.text.split()  # whitespace words, punctuation kept with its word
    long = scored[0].words.index("unbelievably")
    parts = [lp for lp, w in zip(scored[0].token_logprobs, scored[0].word_of_token) if w == long]
    assert len(parts) >= 3 and scored[0].word_logprobs[long] == pytest.approx(sum(parts))


def test_the_command_prints_the_scoring_and_writes_json_lines(tiny_run, tmp_path, capsys):
    run = tiny_run("mlm")
    source = tmp_path / "sentences.txt"
    source.write_text(f"{SENTENCES[0]}\n\n  {SENTENCES[1]}  \n", encoding="utf-8")
    assert read_sentences(None, source) == SENTENCES
    main(["--quiet", "score", str(run), "--file", str(source), "--variant", "pll-word-l2r",
          "--out", str(tmp_path / "out.jsonl")])
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected, _ = TrainedModel(run).score(SENTENCES, variant="pll-word-l2r")
    assert [r["total"] for r in records] == pytest.approx(expected.tolist(), abs=1e-4)
    assert all("pseudo" in r["scoring"] and "sum of its sub-tokens" in r["scoring"] for r in records)
    main(["--quiet", "score", str(run), "--text", SENTENCES[1]])
    out = capsys.readouterr().out
    assert "score pseudo" in out and "sentence 1:" in out and "Shares" in out


@pytest.mark.parametrize("args, message", [
    (["--file", "{tmp}/missing.txt"], "no such file"),
    (["--file", "{tmp}/blank.txt"], "every line is blank"),
    (["--text", "   "], "has no tokens"),
    (["--text", "word " * 200], "more than the"),
    (["--text", "shares fell", "--variant", "pll-sentence"], "no score variant 'pll-sentence'"),
    (["--text", "shares fell", "--out", "{tmp}/no/such/folder/out.jsonl"], "cannot write it"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_run, tmp_path, capsys, args, message):
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(tiny_run("mlm")), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and message in err and "Traceback" not in err and "\n" not in err


def test_an_objective_without_a_score_says_so(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(tiny_run("electra")), "--text", "shares fell"])
    assert exit_.value.code == 2 and "has no sentence score" in capsys.readouterr().err
