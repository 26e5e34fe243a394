"""`objbench export`: the folder loads in transformers and reads exactly as objbench does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from objbench.harness.cli import main
from objbench.harness.errors import ExportError
from objbench.harness.export import export_run
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import OBJECTIVES
from objbench.harness.study import load_study, run_study
from objbench.objectives.mlm import MaskedLM

transformers = pytest.importorskip("transformers", reason="transformers comes with the bench "
                                   "extra (./setup.sh installs it)")

SENTENCES = ["The company said its profit rose .",
             "Mr. Smith , 55 years old , will join the board as a director in November .",
             "It fell ."]
PAIR = ("The stock rose sharply .", "Analysts had expected a decline .")
LM_CLASSES = {"bidirectional": "AutoModelForMaskedLM", "causal": "AutoModelForCausalLM"}


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """(run folder, export folder) of a tiny run per objective; skips, saying why, an objective
    whose reading the export cannot express."""
    made: dict[tuple, tuple[Path, Path]] = {}

    def make(objective: str, *overrides: str) -> tuple[Path, Path]:
        key = (objective, *overrides)
        if key not in made:
            run = tiny_run(objective, *overrides)
            try:
                out = export_run(run, tmp_path_factory.mktemp(f"hf-{objective}") / "model")
            except ExportError as exc:
                pytest.skip(str(exc))
            made[key] = run, out
        return made[key]

    return make


def hf_batches(tokenizer, sentences: list[str], pair: tuple[str, str]) -> list[dict]:
    """The sentences padded in one batch, and the pair, as transformers' tokenizer makes them."""
    return [tokenizer(sentences, padding=True, return_tensors="pt"),
            tokenizer([pair[0]], [pair[1]], return_tensors="pt")]


@pytest.mark.parametrize("objective, overrides", [*((name, ()) for name in OBJECTIVES.names()),
                                                  ("mlm", ("model.position=rope",)),
                                                  ("clm", ("model.position=rope",))])
def test_exported_model_equals_objbench(objective, overrides, exported):
    run, out = exported(objective, *overrides)
    ours = TrainedModel(run, device="cpu")
    auto = getattr(transformers, LM_CLASSES[ours.objective.reading_attention])
    other = next(c for c in LM_CLASSES.values() if c != auto.__name__)
    assert set(json.loads((out / "config.json").read_text())["auto_map"]) == \
        {"AutoConfig", "AutoModel", auto.__name__}, f"{other} must not be offered"

    tokenizer = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    lm = auto.from_pretrained(out, trust_remote_code=True).eval()
    encoder = transformers.AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    for texts, theirs_in in zip([SENTENCES, [PAIR]], hf_batches(tokenizer, SENTENCES, PAIR)):
        x = ours.inputs(texts)
        assert torch.equal(theirs_in["input_ids"], x.input_ids)
        assert torch.equal(theirs_in["token_type_ids"], x.segment_ids)
        assert torch.equal(theirs_in["attention_mask"].sum(1), x.lengths)
        with torch.no_grad():
            layers = ours.model(x.input_ids, x.attn, None, x.segment_ids, all_layers=True)
            theirs = lm(**theirs_in, output_hidden_states=True)
            pooled = encoder(**theirs_in, output_hidden_states=True)
        assert len(theirs.hidden_states) == len(layers) == ours.cfg.model.n_layers + 1
        for mine, exported_layer in zip(layers, theirs.hidden_states):
            torch.testing.assert_close(exported_layer, mine, atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs.logits, ours.model.logits(layers[-1]), atol=1e-5, rtol=0)
        # the pooled state, at every layer, is objbench's sentence feature
        features = torch.from_numpy(ours.sentence_features(texts))
        per_layer = torch.stack([x.pool(h) for h in pooled.hidden_states], 1)
        torch.testing.assert_close(per_layer, features, atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled.pooler_output, features[:, -1], atol=1e-5, rtol=0)


def test_causal_export_reads_left_padding_and_generates_objbench_greedy_tokens(exported):
    """Generation pads on the left; positions count from the first real token, so each row reads
    (logits to 1e-5) and continues (greedy tokens) exactly as objbench reads that sentence alone."""
    run, out = exported("clm")
    ours = TrainedModel(run, device="cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    tokenizer.padding_side = "left"
    lm = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    prompts = ["the company said its profit", "it"]
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        padded = lm(**batch).logits
    generated = lm.generate(**batch, max_new_tokens=4, do_sample=False)
    for prompt, logits, row in zip(prompts, padded, generated):
        ids = torch.tensor([[ours.vocab["[CLS]"], *ours.tokens(prompt)]])
        with torch.no_grad():
            alone = ours.model.logits(ours.model(ids, "causal"))[0]
            torch.testing.assert_close(logits[-len(alone):], alone, atol=1e-5, rtol=0)
            for _ in range(4):
                next_id = ours.model.logits(ours.model(ids, "causal")[:, -1]).argmax(-1, keepdim=True)
                ids = torch.cat([ids, next_id], 1)
        assert row[-ids.shape[1]:].tolist() == ids[0].tolist()


def test_export_folder_files_checkpoint_and_card(tiny_run, tmp_path, capsys):
    run = tiny_run("clm")
    out = tmp_path / "clm-at-2"
    main(["export", str(run), "--out", str(out), "--checkpoint", "2"])
    assert str(out) in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "configuration_objbench.py", "model.safetensors",
        "modeling_objbench.py", "tokenizer.json", "tokenizer_config.json"]
    weights = load_file(str(out / "model.safetensors"))
    at_step_2 = load_file(str(run / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert weights.keys() == at_step_2.keys()
    assert all(torch.equal(weights[k], at_step_2[k]) for k in weights)
    config = json.loads((out / "config.json").read_text())
    assert (config["reading_attention"], config["pooling"], config["architectures"]) == \
        ("causal", "last", ["ObjbenchForCausalLM"])
    # the modeling code needs torch and transformers only
    code = (out / "modeling_objbench.py").read_text() + (out / "configuration_objbench.py").read_text()
    assert "objbench." not in code.replace("configuration_objbench", "")

    card = (out / "README.md").read_text()
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    at_2 = next(m for m in metrics if m["step"] == 2)
    assert "step-0000002" in card and "AutoModelForCausalLM" in card
    assert f"| tokens | {at_2['tokens']:,} |" in card
    assert f"| targets | {at_2['targets']:,} |" in card
    assert f"{at_2['val_loss']:.4f} nats per target at step 2" in card
    state = json.loads((run / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert state["corpus_hash"] in card and "objbench 0.1.0" in card
    assert "## Study results" not in card  # a run trained alone belongs to no study


def test_export_refuses_bad_step_foreign_folder_and_unexpressible_reading(tiny_run, tmp_path, capsys,
                                                                          monkeypatch):
    run = tiny_run("mlm")
    with pytest.raises(SystemExit) as stop:
        main(["export", str(run), "--out", str(tmp_path / "x"), "--checkpoint", "3"])
    assert stop.value.code == 2
    assert "no checkpoint at step 3; its checkpoints are at steps: 2, 4" in capsys.readouterr().err
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an objbench export"):
        export_run(run, foreign)
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]
    # an earlier export is replaced in place
    out = export_run(run, tmp_path / "again")
    assert export_run(run, out) == out and not (tmp_path / "again.tmp").exists()
    monkeypatch.setattr(MaskedLM, "reading_attention", "anticausal")
    with pytest.raises(ExportError, match="attention 'anticausal'"):
        export_run(run, tmp_path / "anticausal")
    assert not (tmp_path / "anticausal").exists()


def test_card_of_a_study_run_holds_its_results(tmp_path):
    spec = {"name": "carded", "reference": "mlm", "seeds": [0], "budget": {"steps": 4},
            "arms": [{"name": "mlm", "objective": "mlm"}],
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 96},
            "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
            "train": {"batch_size": 8, "eval_points": 2, "threads": 2},
            "tasks": {"agreement": {"max_per_phenomenon": 4}}, "probe_at": [1.0]}
    (tmp_path / "carded.yaml").write_text(yaml.safe_dump(spec))
    study = tmp_path / "study"
    assert run_study(load_study(tmp_path / "carded.yaml"), study)
    run = study / "runs" / "mlm" / "seed0"

    card = (export_run(run, tmp_path / "final") / "README.md").read_text()
    rows = [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines()]
    probed = [r for r in rows if r["task"] == "agreement"]
    assert probed and {r["step"] for r in probed} == {4}
    assert "Study `carded`, arm `mlm`, seed 0, at this checkpoint" in card
    for r in probed:
        cells = [r["task"], r["metric"], r["split"], r["layer"], r["pooling"], r["group"],
                 f"{r['value']:.4f}", r["n"]]
        assert "| " + " | ".join("" if c is None else str(c) for c in cells) + " |" in card
    provenance = json.loads((study / "provenance.json").read_text())
    assert f"Trained with objbench 0.1.0 at commit `{provenance['git_commit']}`" in card
    assert provenance["corpus_hash"] in card

    early = (export_run(run, tmp_path / "early", step=2) / "README.md").read_text()
    assert "which probed it at other checkpoints than this one" in early
