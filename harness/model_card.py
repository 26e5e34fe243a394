"""The model card (README.md) of an exported run: what was trained, on what data, for how
much of every budget axis, how it scored, and with which objbench."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import objbench
from objbench.harness import checkpoint as ckpt
from objbench.harness.config import BUDGET_AXES, RunConfig, validate
from objbench.harness.integrity import file_digest
from objbench.harness.reading import TrainedModel
from objbench.harness.registry import source_commit

RESULT_COLUMNS = ("task", "metric", "split", "layer", "pooling", "group", "value", "n")


def model_card(model: TrainedModel, run_dir: Path, lm_class: str) -> str:
    """The card's Markdown for ``model`` (a run at one checkpoint) exported with ``lm_class``."""
    state = ckpt.load_state(model.checkpoint)
    cfg = validate(RunConfig, state["config"], "the checkpoint's config")  # as trained
    step = state["counters"]["step"]
    study = study_folder(run_dir)
    sections = [
        _header(model, cfg, lm_class),
        _objective(model, cfg),
        _budget(cfg, state["counters"]),
        _validation(run_dir, step),
        _data(model, cfg, state, study),
        _provenance(model, cfg, study),
        _study_results(run_dir, study, step),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def study_folder(run_dir: Path) -> Path | None:
    """The study folder of a run trained by `objbench study run` (``<study>/runs/<arm>/seed<k>``)."""
    parents = Path(run_dir).resolve().parents
    if len(parents) > 2 and parents[1].name == "runs" and (parents[2] / "study.yaml").exists():
        return parents[2]
    return None


def _header(model: TrainedModel, cfg: RunConfig, lm_class: str) -> str:
    return f"""---
library_name: transformers
tags: [objbench, {cfg.objective}]
---

# `{cfg.objective}` encoder trained with objbench (seed {cfg.seed}, {model.checkpoint.name})

A {cfg.model.n_layers}-layer, {cfg.model.d_model}-wide pre-LN Transformer encoder with
{model.model.num_params(include_embeddings=True):,} parameters and a {model.vocab.size:,}-token
vocabulary, trained with the objective `{cfg.objective}`; it reads up to
{model.max_tokens + 1} tokens, `[CLS]` included. Its modeling code ships in this folder
(`trust_remote_code=True`); every class reads under the objective's reading attention, so
hidden states and logits are objbench's own.

```python
from transformers import AutoModel, {lm_class}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder", trust_remote_code=True)
lm = {lm_class}.from_pretrained("path/to/this/folder", trust_remote_code=True)
encoder = AutoModel.from_pretrained("path/to/this/folder", trust_remote_code=True)
features = encoder(**tokenizer(["A sentence."], return_tensors="pt")).pooler_output
```"""


def _objective(model: TrainedModel, cfg: RunConfig) -> str:
    o = model.objective
    options = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in cfg.options.items())
    return f"""## Objective: `{cfg.objective}`

{type(o).description}

| option | value |
| --- | --- |
{options or "| (none) | |"}

Reading: `{o.reading_attention}` attention, sentence representation at the `{o.pooling}`
position (`pooler_output`); sentence score in objbench: {o.score_method}."""


def _budget(cfg: RunConfig, counters: dict) -> str:
    rows = [f"| {axis} | {_number(counters['step' if axis == 'steps' else axis])} |"
            for axis in BUDGET_AXES]
    rows.insert(2, f"| input tokens | {_number(counters['input_tokens'])} |")
    return f"""## Budget consumed

The run's budget: {_number(cfg.budget.value)} {cfg.budget.axis}. At this checkpoint:

| axis | consumed |
| --- | --- |
{chr(10).join(rows)}

(tokens: clean corpus tokens; input tokens: non-padding positions the encoder saw; targets:
positions that carried a loss; flops: model matmul FLOPs, forward and backward.)"""


def _number(value: float) -> str:
    return f"{value:.3e}" if value >= 1e9 else f"{value:,.0f}"


def _validation(run_dir: Path, step: int) -> str:
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    measured = [r for r in rows if "val_loss" in r and r["step"] <= step]
    if not measured:
        return "## Validation loss\n\nNot recorded (the run's metrics.jsonl has none)."
    last = measured[-1]
    return f"""## Validation loss

{last['val_loss']:.4f} nats per target at step {last['step']}, on the objective's own targets
(validation masks fixed across seeds and arms); losses of different objectives predict
different targets and are not comparable."""


def _data(model: TrainedModel, cfg: RunConfig, state: dict, study: Path | None) -> str:
    d = cfg.data
    corpus_hash = state.get("corpus_hash") or _provenance_of(study).get("corpus_hash") \
        or "not recorded (the checkpoint predates recording it)"
    return f"""## Data and tokenizer

| | |
| --- | --- |
| corpus | `{d.corpus}` |
| corpus sha256 | `{corpus_hash}` |
| tokenizer | {d.tokenizer}, {model.vocab.size:,} tokens, specials {', '.join(model.vocab.specials)} |
| tokenizer.json sha256 (as trained) | `{file_digest(model.run_dir / 'tokenizer.json')}` |
| block size | {d.block_size} tokens |"""


def _provenance(model: TrainedModel, cfg: RunConfig, study: Path | None) -> str:
    trained = _provenance_of(study)
    trained_line = (f"Trained with objbench {trained['objbench_version']} at commit "
                    f"`{trained['git_commit']}`.\n") if trained else ""
    config = yaml.safe_dump(cfg.to_dict(), sort_keys=False).strip()
    return f"""## Provenance

{trained_line}Exported by objbench {objbench.__version__} at commit `{source_commit()}`. Seed
{cfg.seed}; settings hash `{cfg.settings_hash()}`; checkpoint `{model.checkpoint.name}`.
The resolved run config:

```yaml
{config}
```"""


def _provenance_of(study: Path | None) -> dict:
    path = study / "provenance.json" if study else None
    return json.loads(path.read_text()) if path and path.exists() else {}


def _study_results(run_dir: Path, study: Path | None, step: int) -> str:
    path = Path(run_dir) / "results.jsonl"
    if study is None or not path.exists():
        return ""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    here = sorted((r for r in rows if r["step"] == step and r["task"] != "val_loss"),
                  key=lambda r: (r["task"], r["metric"], str(r["layer"]), str(r["pooling"]),
                                 str(r["group"])))
    if not here:
        return (f"## Study results\n\nThis run belongs to study `{study.name}`, which probed it at "
                f"other checkpoints than this one (see {study / 'report.md'}).")
    table = "\n".join("| " + " | ".join(_cell(r[c]) for c in RESULT_COLUMNS) + " |" for r in here)
    return f"""## Study results

Study `{here[0]['study']}`, arm `{here[0]['arm']}`, seed {here[0]['seed']}, at this checkpoint
(step {step}); `metric@baseline` rows are what a reader without the encoder gets on the same
items. The study's report compares the arms: {study / 'report.md'}.

| {' | '.join(RESULT_COLUMNS)} |
| {' | '.join('---' for _ in RESULT_COLUMNS)} |
{table}"""


def _cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)
