"""The built-in tasks, registered in pyproject.toml exactly like third-party ones.

Every split is cut to its cap by a fixed permutation (seed 0, never the run seed), so every
run, seed and arm sees the same items and per-item results pair up across arms; a larger cap
keeps a superset. The default caps keep the whole set of tasks fast on a quickstart-sized
model on a laptop CPU; raise them for a real study (``--set sentiment.max_train=null`` = all).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import datasets
import numpy as np
from pydantic import Field

from objbench.harness.reading import Text, TrainedModel
from objbench.tasks import probe_data
from objbench.tasks.admission import Admission
from objbench.tasks.base import Options, ReadingOptions, Task, TaskResult
from objbench.tasks.bow import bag_of_words_correct, bag_of_words_scores
from objbench.tasks.finetune import Labelled, finetune
from objbench.tasks.lexical import (Lexicon, add_baseline_rows, add_contextual_gain, add_subset_rows,
                                    ambiguous_types, is_ambiguous)
from objbench.tasks.probing import (MEAN, TOKEN_POOLING, LayerProbe, ProbeSplit, add_probe_rows, majority_acc,
                                    pair_features, pooled_features, probe_layers, probe_streamed,
                                    ridge_layers, spearman)
from objbench.tasks.zero_shot import minimal_pairs, rank_candidates

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
Reading = Literal["probe", "finetune"]
# the test metric each reading reports, per kind of sentence task
READING_METRICS = {"classify": (("probe", "probe_acc"), ("finetune", "finetune_acc")),
                   "regress": (("probe", "probe_spearman"), ("finetune", "finetune_spearman"))}


def _cap(default: int | None, unit: str) -> Any:
    return Field(default, ge=2, description=f"{unit} kept (a fixed subset, the same for every run); null = all")


class SplitCaps(ReadingOptions):
    """How many examples of each split to keep (`subsets`), with the reading options every task
    over split data has (`ReadingOptions`); tasks override the default caps."""

    max_train: int | None = _cap(None, "training examples")
    max_validation: int | None = _cap(None, "validation examples")
    max_test: int | None = _cap(None, "test examples")

    def caps(self) -> dict[str, int | None]:
        return {"train": self.max_train, "validation": self.max_validation, "test": self.max_test}


class ProbeOptions(Options):
    """The logistic probes' settings (`probe_layers`)."""

    C: list[float] = Field([1.0], min_length=1,
                           description="inverse L2 strengths of the logistic probe, picked on validation")
    max_iter: int = Field(200, ge=1,
                          description="L-BFGS iterations per probe: a fixed budget, the same for every arm")


class PoolingOptions(Options):
    """Which sentence poolings are probed (`pooled_features`)."""

    mean_pooling: bool = Field(True,
                               description="also probe mean-pooled features, besides the objective's own pooling")


class FinetuneOptions(Options):
    """The fine-tuning grid (`objbench.tasks.finetune.finetune`)."""

    lrs: list[float] = Field([1e-4, 3e-4], min_length=1,
                             description="AdamW learning rates tried; the best on validation is kept")
    epochs: int = Field(2, ge=1, description="passes over the training subset per learning rate")
    batch_size: int = Field(32, ge=1, description="examples per fine-tuning step")


def subsets(data: datasets.DatasetDict,
            caps: dict[str, int | None]) -> tuple[dict[str, datasets.Dataset], dict[str, list[str]]]:
    """Each of `SPLITS` cut to its cap (None = all) by a fixed permutation (seed 0, never the
    run's), and each kept example's id: its index in the full split, stable across runs, so
    per-item values pair up across arms and a larger cap keeps a superset."""
    out, ids = {}, {}
    for split in SPLITS:
        ds = data[split]
        keep = np.arange(ds.num_rows)
        if caps[split] is not None and caps[split] < ds.num_rows:
            keep = np.sort(np.random.default_rng(0).permutation(ds.num_rows)[: caps[split]])
            ds = datasets.Dataset.from_dict(ds[keep.tolist()], features=ds.features)
        out[split] = ds
        ids[split] = [str(i) for i in keep]
    return out, ids


def word_capped(data: dict[str, datasets.Dataset], ids: dict[str, list[str]], max_words: int | None,
                ) -> tuple[dict[str, datasets.Dataset], dict[str, list[str]]]:
    """Each split of pre-split sentences (column ``words``) cut to whole sentences holding at
    most ``max_words`` words (at least one sentence), taken in a fixed random order (seed 0,
    as `subsets`): the same sentences for every run, from every part of the corpus."""
    if max_words is None:
        return data, ids
    out, kept_ids = {}, {}
    for split, ds in data.items():
        order = np.random.default_rng(0).permutation(ds.num_rows)
        words = np.cumsum(np.array([len(w) for w in ds["words"]], dtype=np.int64)[order])
        keep = np.sort(order[: max(1, int(np.searchsorted(words, max_words, side="right")))])
        out[split] = ds if len(keep) == ds.num_rows else ds.select(keep.tolist())
        kept_ids[split] = [ids[split][i] for i in keep]
    return out, kept_ids


def classify(result: TaskResult, model: TrainedModel, texts: dict[str, list[Text]],
             labels: dict[str, np.ndarray], test_ids: list[str], o: SentimentOptions | HFOptions,
             seed: int) -> None:
    """Sentence (or pair) classification: probes per layer and fine-tuning, each next to the
    majority and bag-of-words baselines.

    ``texts`` and ``labels`` per split (`SPLITS`), already admitted (`Admission`); ``test_ids``
    name the test items; ``o`` has the fields of `ProbeOptions`, `PoolingOptions`,
    `FinetuneOptions` and ``readings`` (a list of ``"probe"``, ``"finetune"``).
    """
    n_test, n_val = len(labels["test"]), len(labels["validation"])
    bow = bag_of_words_correct(model, texts, labels, o.C, o.max_iter, seed)
    for metric in [m for reading, m in READING_METRICS["classify"] if reading in o.readings]:
        result.add(metric, majority_acc(labels["train"], labels["test"]), n_test, baseline="majority")
        result.add(metric, bow.mean(), n_test, baseline="bag-of-words")
        result.add_items(metric, None, test_ids, bow, baseline="bag-of-words")
    if "probe" in o.readings:
        feats = {s: pooled_features(model, texts[s], o.mean_pooling, desc=f"{result.task} {s}") for s in SPLITS}
        for pooling in feats["train"]:
            splits = [ProbeSplit(feats[s][pooling], labels[s], np.array([str(t) for t in texts[s]])) for s in SPLITS]
            add_probe_rows(result, probe_layers(*splits, seed=seed, cs=o.C, max_iter=o.max_iter,
                                                device=model.device), pooling, test_ids)
    if "finetune" in o.readings:
        n_classes = int(max(y.max() for y in labels.values())) + 1
        ft = finetune(model, *(Labelled(texts[s], labels[s]) for s in SPLITS), n_classes=n_classes,
                      lrs=o.lrs, epochs=o.epochs, batch_size=o.batch_size, seed=seed)
        # fine-tuning always reads the objective's declared position: not a reading to compare by
        result.add("finetune_acc", ft.test_score, n_test)
        result.add("finetune_acc", ft.val_score, n_val, split="validation")
        result.add_items("finetune_acc", None, test_ids, ft.test_pred == labels["test"])


def _sentence_primary(o: SentimentOptions | STSBOptions | HFOptions, kind: str) -> list[dict[str, Any]]:
    """Fine-tuning when it runs, else the mean-pooled probe at the layer chosen on validation:
    mean pooling reads every objective the same way, where the declared pooling differs."""
    metric = dict(READING_METRICS[kind])["finetune" if "finetune" in o.readings else "probe"]
    return [{"metric": metric} if metric.startswith("finetune") else {"metric": metric, "pooling": MEAN}]


def regress(result: TaskResult, model: TrainedModel, texts: dict[str, list[Text]],
            scores: dict[str, np.ndarray], o: STSBOptions | HFOptions, seed: int) -> None:
    """Scored sentence pairs (or sentences): fine-tuning and ridge probes, by Spearman correlation."""
    n_test, n_val = len(scores["test"]), len(scores["validation"])
    bow = spearman(bag_of_words_scores(model, texts, scores, o.alphas), scores["test"])
    for metric in [m for reading, m in READING_METRICS["regress"] if reading in o.readings]:
        result.add(metric, bow, n_test, baseline="bag-of-words")
    if "finetune" in o.readings:
        ft = finetune(model, *(Labelled(texts[s], scores[s]) for s in SPLITS), n_classes=None,
                      lrs=o.lrs, epochs=o.epochs, batch_size=o.batch_size, seed=seed)
        result.add("finetune_spearman", ft.test_score, n_test)
        result.add("finetune_spearman", ft.val_score, n_val, split="validation")
    if "probe" in o.readings:
        feats = {s: _regression_features(model, texts[s], o.mean_pooling, f"{result.task} {s}") for s in SPLITS}
        for pooling in feats["train"]:
            splits = [ProbeSplit(feats[s][pooling], scores[s]) for s in SPLITS]
            layers = ridge_layers(*splits, alphas=o.alphas)
            for layer, (_, rho) in enumerate(layers):
                result.add("probe_spearman", rho, n_test, layer=layer, pooling=pooling)
            best = max(range(len(layers)), key=lambda layer: layers[layer][0])  # chosen on validation
            result.add("probe_spearman", layers[best][1], n_test, pooling=pooling)
            result.add("best_layer", best, n_val, pooling=pooling, split="validation")


def _regression_features(model: TrainedModel, texts: list[Text], mean: bool, desc: str) -> dict[str, np.ndarray]:
    """Pooled features; for pairs, each sentence encoded alone and combined (SentEval style)."""
    if isinstance(texts[0], str):
        return pooled_features(model, texts, mean, desc=desc)
    a = pooled_features(model, [t[0] for t in texts], mean, desc=f"{desc} (first)")
    b = pooled_features(model, [t[1] for t in texts], mean, desc=f"{desc} (second)")
    return {p: pair_features(a[p], b[p]) for p in a}


class SentimentOptions(SplitCaps, ProbeOptions, PoolingOptions, FinetuneOptions):
    readings: list[Reading] = Field(["probe"], min_length=1, description="which readings to run")
    max_train: int | None = _cap(1000, "training reviews")
    max_validation: int | None = _cap(300, "validation reviews")
    max_test: int | None = _cap(500, "test reviews")


class Sentiment(Task):
    name = "sentiment"
    description = "Rotten Tomatoes review polarity: linear probes per layer with a control task (+ fine-tuning)"
    Options = SentimentOptions

    def primary(self) -> list[dict[str, Any]]:
        return _sentence_primary(self.options, "classify")

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        admission = Admission(model, self.name, self.options)
        data, ids = admission.keep_readable(*subsets(probe_data.load_sentiment(), self.options.caps()),
                                            lambda d: d["text"])
        probe_data.validate_labelled(datasets.DatasetDict(data), self.name, ["text"], "label")
        result = TaskResult(self.name)
        classify(result, model, {s: list(d["text"]) for s, d in data.items()},
                 {s: np.array(d["label"]) for s, d in data.items()}, ids["test"], self.options, seed)
        admission.add_rows(result)
        return result


class POSOptions(SplitCaps, ProbeOptions):
    max_train: int | None = _cap(200, "training sentences")
    max_validation: int | None = _cap(100, "validation sentences")
    max_test: int | None = _cap(200, "test sentences")
    max_words: int | None = Field(
        100_000, ge=1, description="words read per split (whole sentences, a fixed random subset "
        "like the caps'); null = all. Features stream a few layers at a time (`probe_streamed`), "
        "so a layer's features take at most 3 x max_words x d_model floats: 0.9 GB at BERT-base size")
    batch_size: int = Field(64, ge=1, description="sentences per feature-extraction batch")
    ambiguous_min_count: int = Field(
        2, ge=1, description="a word type is ambiguous when at least two of its tags are each seen "
                             "this often in the training tokens")


class POS(Task):
    name = "pos"
    description = "universal POS tags of Brown words: token probes per layer with a word-type control"
    Options = POSOptions

    def primary(self) -> list[dict[str, Any]]:
        # ambiguous words are where a tag depends on context; the rest a lexicon tags
        return [{"metric": "probe_acc_ambiguous", "pooling": TOKEN_POOLING}]

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        o = self.options
        admission = Admission(model, self.name, o)
        data, sentence_ids = admission.keep_readable(*word_capped(*subsets(probe_data.load_pos(), o.caps()),
                                                                  o.max_words),
                                                     lambda d: d["words"], words=True)
        read: dict = {}  # labels and item ids, the same at every layer: kept from the first read

        def features(group: list[int]) -> list[ProbeSplit]:
            splits, read["ids"] = self._read(model, data, sentence_ids["test"], group)
            read.setdefault("labels", [ProbeSplit(np.empty((len(s.y), 0, 0)), s.y, s.keys) for s in splits])
            return splits

        n_words = sum(len(words) for d in data.values() for words in d["words"])
        layers = probe_streamed(features, model.cfg.model.n_layers + 1, n_words, model.cfg.model.d_model,
                                seed, o.C, o.max_iter, model.device)
        result = TaskResult(self.name)
        add_probe_rows(result, layers, TOKEN_POOLING, read["ids"])
        self._context_rows(result, layers, read["labels"], np.array(read["ids"]))
        admission.add_rows(result)
        return result

    def _read(self, model: TrainedModel, data: dict[str, datasets.Dataset], test_ids: list[str],
              layers: list[int]) -> tuple[list[ProbeSplit], list[str]]:
        """Each split's word features at ``layers`` with labels aligned by the words each row
        reads, and the test rows' item ids (``sentence:word``)."""
        splits, tokens = [], {}
        for s in SPLITS:
            words, tags = list(data[s]["words"]), list(data[s]["tags"])
            read = model.word_features(words, self.options.batch_size, layers)
            tokens[s] = datasets.Dataset.from_dict({
                "words": [w for ws, r in zip(words, read) for w in r.align(ws)],
                "tags": [t for ts, r in zip(tags, read) for t in r.align(ts)]})
            splits.append(ProbeSplit(np.concatenate([r.features for r in read]), np.array(tokens[s]["tags"]),
                                     np.array(tokens[s]["words"])))
            if s == "test":
                ids = [f"{i}:{j}" for i, r in zip(test_ids, read) for j in r.word_index]
        probe_data.validate_labelled(datasets.DatasetDict(tokens), self.name, ["words"], "tags")
        return splits, ids

    def _context_rows(self, result: TaskResult, layers: list[LayerProbe], splits: list[ProbeSplit],
                      ids: np.ndarray) -> None:
        """What context adds: accuracy on ambiguous words, the contextual layers' gain over the
        embedding layer, and the baselines that know each word but no context."""
        train, val, test = splits
        lexicon = Lexicon.fit(train.keys, train.y)
        ambiguous = ambiguous_types(train.keys, train.y, self.options.ambiguous_min_count)
        subsets = {"": (np.ones(len(val.y), bool), np.ones(len(test.y), bool)),
                   "_ambiguous": (is_ambiguous(val.keys, ambiguous), is_ambiguous(test.keys, ambiguous))}
        lexical, majority = lexicon.predict(test.keys) == test.y, test.y == lexicon.majority
        if not all(mask.any() for mask in subsets["_ambiguous"]):
            logger.warning("pos: no ambiguous word in the validation or test subset; raise max_validation "
                           "/ max_test or lower ambiguous_min_count to measure context")
            del subsets["_ambiguous"]
        for suffix, (on_val, on_test) in subsets.items():
            add_baseline_rows(result, f"probe_acc{suffix}", lexical[on_test], majority[on_test], ids[on_test])
            add_contextual_gain(result, layers, f"contextual_gain{suffix}", TOKEN_POOLING, on_val, on_test, ids)
            if suffix:
                add_subset_rows(result, layers, f"probe_acc{suffix}", TOKEN_POOLING, on_val, on_test, ids)


class STSBOptions(SplitCaps, PoolingOptions, FinetuneOptions):
    readings: list[Reading] = Field(["finetune"], min_length=1, description="which readings to run")
    max_train: int | None = _cap(300, "training pairs")
    max_validation: int | None = _cap(200, "validation pairs")
    max_test: int | None = _cap(300, "test pairs")
    alphas: list[float] = Field([1.0, 100.0], min_length=1,
                                description="ridge strengths of the probe, picked on validation")


class STSB(Task):
    name = "sts-b"
    description = "STS-B sentence-pair similarity: fine-tuning on [CLS] A [SEP] B [SEP] (+ ridge probe), Spearman"
    Options = STSBOptions

    def primary(self) -> list[dict[str, Any]]:
        return _sentence_primary(self.options, "regress")

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        admission = Admission(model, self.name, self.options)
        data, _ = admission.keep_readable(*subsets(probe_data.load_stsb(), self.options.caps()), _pairs)
        probe_data.validate_labelled(datasets.DatasetDict(data), self.name, ["sentence1", "sentence2"], "score")
        result = TaskResult(self.name)
        regress(result, model, {s: _pairs(d) for s, d in data.items()},
                {s: np.array(d["score"], np.float32) for s, d in data.items()}, self.options, seed)
        admission.add_rows(result)
        return result


def _pairs(data: datasets.Dataset) -> list[Text]:
    return list(zip(data["sentence1"], data["sentence2"]))


class ZeroShotOptions(ReadingOptions):
    """What the zero-shot tasks share: which sentence scores they report."""

    score_variants: bool = Field(
        False, description="also score by every variant the objective offers (e.g. pll-word-l2r beside "
                           "plain pll), in rows whose pooling names the variant")


class AgreementOptions(ZeroShotOptions):
    max_per_phenomenon: int | None = Field(
        30, ge=1, description="pairs per phenomenon (a fixed subset, the same for every run); null = all")


class Agreement(Task):
    name = "agreement"
    description = "subject-verb and determiner-noun agreement minimal pairs from Brown, scored zero-shot"
    Options = AgreementOptions

    def primary(self) -> list[dict[str, Any]]:
        return [{"metric": "acc_sum"}]  # whole-sentence scores, as BLiMP compares them

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        pairs = probe_data.load_agreement(self.options.max_per_phenomenon)
        admission = Admission(model, self.name, self.options)
        ids = [str(i) for i in pairs["sentence_id"]]
        read = admission.sentences([*pairs["good"], *pairs["bad"]], "test", ids * 2)
        pairs = pairs.select(np.flatnonzero(read[:len(ids)] & read[len(ids):]))  # a pair is read whole or not at all
        result = TaskResult(self.name)
        minimal_pairs(result, model, pairs["good"], pairs["bad"], pairs["phenomenon"],
                      [str(i) for i in pairs["sentence_id"]], self.options.score_variants)
        admission.add_rows(result)
        return result


class ClozeOptions(ZeroShotOptions):
    max_per_answer: int | None = Field(
        25, ge=1, description="items per answer word (balanced: picking one word always scores 1/8; "
                              "a fixed subset, the same for every run); null = all")


class Cloze(Task):
    name = "cloze"
    description = "rank the original preposition first among 8 in real Brown sentences, scored zero-shot"
    Options = ClozeOptions

    def primary(self) -> list[dict[str, Any]]:
        return [{"metric": "mrr"}]  # graded: a near miss counts, so fewer items are needed

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        items = probe_data.load_cloze(self.options.max_per_answer)
        candidates = [probe_data.cloze_variants(w, p) for w, p in zip(items["words"], items["position"])]
        admission = Admission(model, self.name, self.options)
        names = [f"{i} ({word})" for i in items["sentence_id"] for word in probe_data.CLOZE_CANDIDATES]
        read = admission.sentences([s for item in candidates for s in item], "test", names)
        keep = np.flatnonzero(read.reshape(len(candidates), -1).all(1))  # an item is ranked whole or not at all
        items, candidates = items.select(keep), [candidates[i] for i in keep]
        result = TaskResult(self.name)
        rank_candidates(result, model, candidates,
                        [probe_data.CLOZE_CANDIDATES.index(a) for a in items["answer"]], items["answer"],
                        [str(i) for i in items["sentence_id"]], self.options.score_variants)
        admission.add_rows(result)
        return result


class HFOptions(SplitCaps, ProbeOptions, PoolingOptions, FinetuneOptions):
    dataset: str = Field(description="hub dataset, e.g. nyu-mll/glue")
    config: str | None = Field(None, description="hub config, e.g. sst2")
    text_fields: list[str] = Field(["text"], min_length=1, max_length=2,
                                   description="one text field, or two for pairs")
    label_field: str = Field("label", description="integer or string labels: classification; floats: regression")
    splits: dict[str, str] = Field({"train": "train", "validation": "validation"}, description=(
        "our split -> the hub's; without a labelled 'test', the hub's validation is the test split "
        "and a fixed tenth of train becomes validation"))
    readings: list[Reading] = Field(["probe"], min_length=1, description="which readings to run")
    max_train: int | None = _cap(2000, "training examples")
    max_validation: int | None = _cap(500, "validation examples")
    max_test: int | None = _cap(1000, "test examples")
    alphas: list[float] = Field([1.0, 100.0], min_length=1, description="ridge strengths (regression probes)")


class HFTask(Task):
    name = "hf"
    description = "any labelled Hugging Face dataset (needs hub access): probes and/or fine-tuning"
    Options = HFOptions
    needs_hub = True

    def __init__(self, options: HFOptions) -> None:
        super().__init__(options)
        self.name = f"hf:{options.dataset}" + (f"/{options.config}" if options.config else "")

    def primary(self) -> list[dict[str, Any]]:
        return _sentence_primary(self.options, "classify")  # the kind is known only from the data

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        o = self.options
        spec = probe_data.HFTaskSpec(self.name, o.dataset, o.config, tuple(o.text_fields), o.label_field,
                                     dict(o.splits))
        data = probe_data.load_hf_task(spec)
        if "test" not in data:
            cut = data["train"].train_test_split(test_size=0.1, seed=0)
            data = datasets.DatasetDict(train=cut["train"], validation=cut["test"], test=data["validation"])
        texts_of = (lambda d: list(d["text"])) if "text" in data["train"].column_names else _pairs
        admission = Admission(model, self.name, o)
        data, ids = admission.keep_readable(*subsets(data, o.caps()), texts_of)
        texts = {s: texts_of(d) for s, d in data.items()}
        result = TaskResult(self.name)
        label = data["train"].features["label"]
        if isinstance(label, datasets.Value) and label.dtype.startswith("float"):
            regress(result, model, texts, {s: np.array(d["label"], np.float32) for s, d in data.items()}, o, seed)
        else:
            classify(result, model, texts, {s: np.array(d["label"]) for s, d in data.items()}, ids["test"], o, seed)
        admission.add_rows(result)
        return result
