"""Generation and coherence: continue held-out prompts with the objective's own sampler.

Prompts are the first ``prompt_tokens`` tokens of held-out documents (a fixed random choice,
the same for every arm); each is continued by ``length`` tokens with the sampler the objective
declares (`Objective.sampler`, `Objective.sample`), at the stated temperature and top-p, drawn
from the run's seed. An objective without a sampler gets one diagnostic row,
``sampling_not_applicable``, not a failure. Rows:

* ``repetition_2`` / ``_3`` (per prompt): the share of a continuation's 2-/3-grams that repeat
  one earlier in it;
* ``distinct_1`` / ``_2`` (pooled): distinct n-grams over all n-grams of all continuations;
* ``js_unigram`` / ``js_bigram`` (pooled): Jensen-Shannon divergence (nats) of the continuations'
  unigram / bigram distribution from the true continuations';
* a pooled metric's per-prompt values are its jackknife pseudo-values (`jackknife`), so arms
  pair prompt by prompt as for the others; its row is their mean, the jackknife estimate;
* ``judge_perplexity`` (per prompt, with ``judge``: any run folder): the perplexity of each
  continuation given its prompt under that run's own scoring, the judge named in ``pooling``.

Each metric also has the true continuations' value as the ``true-continuation`` baseline.
The samples themselves go to ``generation_samples.jsonl`` in the run folder, for reading.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from scipy.spatial.distance import jensenshannon

from objbench.harness.corpora import load_corpus
from objbench.harness.errors import ConfigError, DataError
from objbench.harness.reading import TrainedModel
from objbench.objectives.sampling import Sampling
from objbench.tasks.admission import Admission
from objbench.tasks.base import SAMPLES_FILE, SAMPLING_NOT_APPLICABLE, ReadingOptions, Task, TaskResult

TRUTH = "true-continuation"


class GenerationOptions(ReadingOptions):
    """``long_sentences`` / ``empty_sentences`` apply to the judge's reading of prompt + continuation."""

    corpus: str = Field("news", description="prompts come from this corpus's validation documents")
    n_prompts: int = Field(40, ge=2, description="prompts (a fixed random choice of documents, the same for every arm)")
    prompt_tokens: int = Field(16, ge=1, description="tokens of each prompt: a document's first ones")
    length: int = Field(32, ge=3, description="tokens generated per prompt (and of its true continuation)")
    temperature: float = Field(1.0, gt=0.0, description="divides the logits before sampling")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="nucleus: the smallest token set holding this probability")
    steps: int = Field(16, ge=1, description="steps of iterative samplers (masked diffusion, mask-predict)")
    batch_size: int = Field(20, ge=1, description="prompts continued at once")
    judge: str | None = Field(None, description="a run folder whose own scoring gives each continuation's "
                                                "perplexity (e.g. a clm run); none: no judge rows")


class Generation(Task):
    name = "generation"
    description = "continue held-out prompts with the objective's sampler: repetition, diversity, divergence, judge"
    Options = GenerationOptions

    def primary(self) -> list[dict]:
        return [{"metric": "repetition_2"}]

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        o = self.options
        if o.prompt_tokens + o.length > model.max_tokens:
            raise ConfigError(f"task 'generation': prompt_tokens + length = {o.prompt_tokens + o.length} tokens, "
                              f"more than the {model.max_tokens} this run reads; lower them")
        ids, prompts, truths = held_out_prompts(model, o)
        result = TaskResult(self.name)
        if not model.objective.sampler:
            result.add(SAMPLING_NOT_APPLICABLE, 1, len(ids), higher_is_better=False)
            return result
        samples = self._sample(model, prompts, seed)
        add_text_rows(result, samples, truths, ids)
        if o.judge:
            add_judge_rows(result, model, prompts, {None: samples, TRUTH: truths}, ids, o)
        write_samples(model, ids, prompts, samples, truths)
        return result

    @torch.no_grad()
    def _sample(self, model: TrainedModel, prompts: np.ndarray, seed: int) -> np.ndarray:
        o = self.options
        how, gen = Sampling(o.temperature, o.top_p, o.steps), torch.Generator().manual_seed(seed)
        out = [model.objective.sample(model.model, torch.as_tensor(prompts[i:i + o.batch_size]).to(model.device),
                                      o.length, how, gen).cpu().numpy()
               for i in range(0, len(prompts), o.batch_size)]
        return np.concatenate(out)


def held_out_prompts(model: TrainedModel, o: GenerationOptions) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Item ids (document indices), prompts ``(P, prompt_tokens)`` and true continuations
    ``(P, length)`` from validation documents long enough for both, in a fixed order (seed 0)."""
    texts = load_corpus(o.corpus)["validation"]["text"]
    need = o.prompt_tokens + o.length
    chosen: list[tuple[int, list[int]]] = []
    for i in np.random.default_rng(0).permutation(len(texts)):
        tokens = model.tokens(texts[i])
        if len(tokens) >= need:
            chosen.append((int(i), tokens[:need]))
        if len(chosen) == o.n_prompts:
            break
    if len(chosen) < 2:
        raise DataError(f"task 'generation': corpus {o.corpus!r} has {len(chosen)} validation documents of at "
                        f"least {need} tokens; lower prompt_tokens or length")
    chosen.sort()
    tokens = np.array([t for _, t in chosen], dtype=np.int64)
    return [str(i) for i, _ in chosen], tokens[:, :o.prompt_tokens], tokens[:, o.prompt_tokens:]


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repetition(tokens: Sequence[int], n: int) -> float:
    """The share of the n-grams that repeat an earlier one."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams)


def distinct(texts: np.ndarray, n: int) -> float:
    """Distinct n-grams over all n-grams, pooled over every continuation."""
    grams = [g for t in texts for g in ngrams(t.tolist(), n)]
    return len(set(grams)) / len(grams)


def js_divergence(texts: np.ndarray, reference: np.ndarray, n: int) -> float:
    """Jensen-Shannon divergence (nats) between the pooled n-gram distributions."""
    a = Counter(g for t in texts for g in ngrams(t.tolist(), n))
    b = Counter(g for t in reference for g in ngrams(t.tolist(), n))
    support = sorted(set(a) | set(b))
    return float(jensenshannon([a[g] for g in support], [b[g] for g in support]) ** 2)


def jackknife(statistic: Callable[[np.ndarray], float], n: int) -> np.ndarray:
    """Per-prompt values of a statistic pooled over ``n`` prompts (``statistic`` takes the prompts'
    indices): the jackknife pseudo-values n S(all) - (n - 1) S(all but i). Their mean is the
    jackknife estimate of S and their spread its standard error (Efron & Stein 1981); for a
    mean over prompts they are the prompts' own values."""
    everything = np.arange(n)
    left_out = np.array([statistic(np.delete(everything, i)) for i in range(n)])
    return n * statistic(everything) - (n - 1) * left_out


def add_text_rows(result: TaskResult, samples: np.ndarray, truths: np.ndarray, ids: list[str]) -> None:
    """Repetition per prompt, distinct-n and divergence pooled (as jackknife pseudo-values); the
    true continuations' values beside."""
    for baseline, texts in ((None, samples), (TRUTH, truths)):
        for n in (2, 3):
            _add(result, f"repetition_{n}", np.array([repetition(t.tolist(), n) for t in texts]), ids, baseline)
        for n in (1, 2):
            _add(result, f"distinct_{n}", jackknife(lambda k: distinct(texts[k], n), len(ids)), ids, baseline,
                 higher_is_better=True)
    for n, name in ((1, "js_unigram"), (2, "js_bigram")):
        _add(result, name, jackknife(lambda k: js_divergence(samples[k], truths[k], n), len(ids)), ids, None)


def _add(result: TaskResult, metric: str, values: np.ndarray, ids: list[str], baseline: str | None,
         higher_is_better: bool = False) -> None:
    result.add(metric, float(values.mean()), len(values), higher_is_better=higher_is_better, baseline=baseline)
    result.add_items(metric, None, ids, values, baseline=baseline)


def add_judge_rows(result: TaskResult, model: TrainedModel, prompts: np.ndarray, texts: dict[str | None, np.ndarray],
                   ids: list[str], o: GenerationOptions) -> None:
    """Each continuation's perplexity given its prompt under the judge run's own scoring, read
    as text through the judge's tokenizer; the judge is named in ``pooling``."""
    judge = TrainedModel(Path(o.judge), device=str(model.device))
    reading = f"judge {judge.cfg.objective} {o.judge}"
    decode = lambda rows: [model.tokenizer.decode(r.tolist()) for r in rows]  # noqa: E731
    admission = Admission(judge, "generation", o)
    for baseline, continuations in texts.items():
        pairs = list(zip(decode(prompts), decode(continuations)))
        keep = admission.sentences([f"{p} {c}" for p, c in pairs], "test")  # n: both sets of continuations
        values = np.array([_perplexity(judge, p, c) for (p, c), k in zip(pairs, keep) if k])
        kept = [i for i, k in zip(ids, keep) if k]
        result.add("judge_perplexity", values.mean(), len(values), pooling=reading, higher_is_better=False,
                   baseline=baseline)
        result.add_items("judge_perplexity", None, kept, values, pooling=reading, baseline=baseline)
    admission.add_rows(result)


def _perplexity(judge: TrainedModel, prompt: str, continuation: str) -> float:
    """exp of the mean negative log-probability of the continuation's tokens (as the judge reads
    them, cut to its limit) given the prompt."""
    head, tail = judge.tokens(prompt), judge.tokens(continuation)
    ids = (head + tail)[: judge.max_tokens]
    targets = list(range(len(head), len(ids)))
    if not targets:
        raise DataError(f"task 'generation': the judge reads no continuation token after a {len(head)}-token "
                        f"prompt (its limit is {judge.max_tokens}); lower prompt_tokens")
    logprobs = judge.target_scores([ids] * len(targets), targets, desc="judge")
    return float(np.exp(-logprobs.mean()))


def write_samples(model: TrainedModel, ids: list[str], prompts: np.ndarray, samples: np.ndarray,
                  truths: np.ndarray) -> None:
    """Prompt, continuation and true continuation as text, one JSON line per prompt."""
    decode = model.tokenizer.decode
    lines = [json.dumps({"item": i, "prompt": decode(p.tolist()), "sample": decode(s.tolist()),
                         "truth": decode(t.tolist())}) for i, p, s, t in zip(ids, prompts, samples, truths)]
    (Path(model.run_dir) / SAMPLES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
