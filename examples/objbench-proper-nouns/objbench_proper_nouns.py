"""Proper or common noun? A word-level probe of Brown's nouns, as a third-party objbench task.

It lives outside objbench, registers through the ``objbench.tasks`` entry point and uses only
the public task API: the reading options and their counts (`Admission`), word features
aligned by word index, the probes with their control task, and the built-in split caps.
"""

from __future__ import annotations

import re

import datasets
import numpy as np
from pydantic import Field

from objbench.tasks import (SPLITS, TOKEN_POOLING, Admission, ProbeOptions, ProbeSplit, SplitCaps, Task,
                            TaskResult, TrainedModel, add_probe_rows, majority_acc, probe_layers, subsets)
from objbench.tasks.probe_data import load_pos, validate_labelled

# Brown's noun tags, after suffixes for title, headline and cited words (-tl, -hl, -nc) and the
# possessive ($) are removed; nr (adverbial nouns: "home", "today") and contractions
# ("np+bez") are left out.
KINDS = {"nn": "common", "nns": "common", "np": "proper", "nps": "proper"}


def noun_kind(brown_tag: str) -> str | None:
    """``proper``, ``common``, or None for a tag that is not one of Brown's plain noun tags."""
    return KINDS.get(re.sub(r"(-(tl|hl|nc))+$", "", brown_tag).rstrip("$"))


class ProperNounOptions(SplitCaps, ProbeOptions):
    """Sentences kept per split (a fixed subset, the same for every run), probe settings, and
    what to do with long and empty sentences."""

    max_train: int | None = Field(300, ge=2, description="training sentences kept; null = all")
    max_validation: int | None = Field(100, ge=2, description="validation sentences kept; null = all")
    max_test: int | None = Field(200, ge=2, description="test sentences kept; null = all")
    batch_size: int = Field(64, ge=1, description="sentences per feature-extraction batch")


class ProperNouns(Task):
    name = "proper-nouns"
    description = "proper vs common nouns of Brown: word probes per layer, against a capitalisation baseline"
    Options = ProperNounOptions

    def run(self, model: TrainedModel, seed: int) -> TaskResult:
        o = self.options
        admission = Admission(model, self.name, o)
        data, ids = admission.keep_readable(*subsets(load_pos(), o.caps()), lambda d: d["words"], words=True)
        nouns = {s: self._nouns(model, data[s], ids[s]) for s in SPLITS}
        validate_labelled(datasets.DatasetDict({s: n[1] for s, n in nouns.items()}), self.name, ["word"], "kind")
        splits = [ProbeSplit(np.stack(x), np.array(n["kind"]), np.array(n["word"])) for x, n in nouns.values()]
        train, _, test = splits
        capitalised = np.array([w[:1].isupper() for w in test.keys])
        result = TaskResult(self.name)
        # baselines are rows "metric@name": reports draw them as reference lines for probe_acc
        result.add("probe_acc", majority_acc(train.y, test.y), len(test.y), baseline="majority")
        result.add("probe_acc", np.mean(capitalised == (test.y == "proper")), len(test.y), baseline="capitalised")
        add_probe_rows(result, probe_layers(*splits, seed=seed, cs=o.C, max_iter=o.max_iter), TOKEN_POOLING,
                       nouns["test"][1]["item"])
        admission.add_rows(result)
        return result

    def _nouns(self, model: TrainedModel, data: datasets.Dataset,
               sentence_ids: list[str]) -> tuple[list[np.ndarray], datasets.Dataset]:
        """Features of every noun read, and its word, kind and item id (``sentence:word``)."""
        feats, rows = [], {"word": [], "kind": [], "item": []}
        read = model.word_features(list(data["words"]), self.options.batch_size)
        for sentence, words, tags, words_read in zip(sentence_ids, data["words"], data["brown_tags"], read):
            for row, j in enumerate(words_read.word_index):
                if kind := noun_kind(tags[j]):
                    feats.append(words_read.features[row])
                    rows["word"].append(words[j])
                    rows["kind"].append(kind)
                    rows["item"].append(f"{sentence}:{j}")
        return feats, datasets.Dataset.from_dict(rows)
