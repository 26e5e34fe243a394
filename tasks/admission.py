"""Which of a task's inputs the model reads, and what reading cut, skipped or dropped.

A task passes each split's sentences (or pre-split word lists) through one `Admission` before
reading them. The length limit is the model's (`TrainedModel.max_tokens`, the objective's
declared limit), the same for features and scores; what happens past it, or to a sentence
with no tokens, is the task's `ReadingOptions`. The counts come back as ordinary result rows,
per split. They are diagnostics, not scores: ``higher_is_better`` is False on every one.

* ``sentences_truncated``: sentences cut to the limit (``long_sentences: truncate``);
* ``tokens_truncated``: the tokens those cuts removed;
* ``sentences_skipped``: sentences left out for length (``long_sentences: skip``);
* ``sentences_empty``: sentences left out for having no token (``empty_sentences: skip``);
* ``words_dropped``: words with no sub-token, left out with their labels (word-by-word reading).

``n`` is what the split offered: its sentences, or for ``words_dropped`` the words of the
sentences read. A pair ``(A, B)`` is one sentence here, read as ``A [SEP] B [SEP]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import datasets
import numpy as np

from objbench.harness.errors import DataError, EmptyInputError
from objbench.harness.reading import Text, TrainedModel
from objbench.tasks.base import ReadingOptions, TaskResult


@dataclass
class ReadCounts:
    """One split's counts; ``sentences`` and ``words`` are the ``n`` of the rows."""

    by_words: bool = False  # read word by word: words_dropped applies
    sentences: int = 0
    words: int = 0
    sentences_truncated: int = 0
    tokens_truncated: int = 0
    sentences_skipped: int = 0
    sentences_empty: int = 0
    words_dropped: int = 0


class Admission:
    """Applies one task's `ReadingOptions` to its inputs and counts what they did."""

    def __init__(self, model: TrainedModel, task: str, options: ReadingOptions) -> None:
        self.model = model
        self.task = task
        self.options = options
        self.counts: dict[str, ReadCounts] = {}

    def sentences(self, texts: Sequence[Text], split: str, ids: Sequence[str] | None = None) -> np.ndarray:
        """Which ``texts`` (sentences or pairs) to read: a bool mask. ``ids`` name them in errors
        (default: their position)."""
        return self._admit([self.model.length(t) for t in texts], texts, split, ids)

    def words(self, sentences: Sequence[Sequence[str]], split: str, ids: Sequence[str] | None = None) -> np.ndarray:
        """Which pre-split sentences to read (a bool mask); also counts the words of the kept
        ones that yield no sub-token, which `TrainedModel.word_features` leaves out."""
        encodings = [self.model.encode_words(words) for words in sentences]
        keep = self._admit([len(e.ids) for e in encodings], sentences, split, ids)
        counts = self.counts[split]
        counts.by_words = True
        for words, enc, kept in zip(sentences, encodings, keep):
            if kept:
                counts.words += len(words)
                counts.words_dropped += len(words) - len({w for w in enc.word_ids if w is not None})
        return keep

    def keep_readable(self, data: dict[str, datasets.Dataset], ids: dict[str, list[str]],
                      inputs: Callable[[datasets.Dataset], Sequence], words: bool = False,
                      ) -> tuple[dict[str, datasets.Dataset], dict[str, list[str]]]:
        """Each split, and its item ids, cut to the examples read; ``inputs`` gives a split's
        texts (or, with ``words``, its pre-split sentences), in row order."""
        admit = self.words if words else self.sentences
        kept_data, kept_ids = {}, {}
        for split, ds in data.items():
            keep = np.flatnonzero(admit(list(inputs(ds)), split, ids[split])).tolist()
            kept_data[split] = ds if len(keep) == ds.num_rows else ds.select(keep)
            kept_ids[split] = [ids[split][i] for i in keep]
        return kept_data, kept_ids

    def _admit(self, lengths: list[int], texts: Sequence, split: str, ids: Sequence[str] | None) -> np.ndarray:
        o, limit = self.options, self.model.max_tokens
        counts = self.counts.setdefault(split, ReadCounts())
        keep = np.ones(len(lengths), dtype=bool)
        for i, n in enumerate(lengths):
            counts.sentences += 1
            if n == 0 and o.empty_sentences == "error":
                name = ids[i] if ids is not None else i
                raise EmptyInputError(
                    f"task {self.task!r}, split {split!r}, sentence {name}: no tokens after tokenisation "
                    f"({texts[i]!r}); fix the data or set the task option empty_sentences: skip")
            if n == 0:
                counts.sentences_empty += 1
                keep[i] = False
            elif n > limit and o.long_sentences == "skip":
                counts.sentences_skipped += 1
                keep[i] = False
            elif n > limit:
                counts.sentences_truncated += 1
                counts.tokens_truncated += n - limit
        if len(lengths) and not keep.any():
            raise DataError(f"task {self.task!r}, split {split!r}: none of its {len(lengths)} sentences can be "
                            f"read ({counts.sentences_empty} empty, {counts.sentences_skipped} longer than "
                            f"{limit} tokens)")
        return keep

    def add_rows(self, result: TaskResult) -> None:
        """One diagnostic row per count and split admitted: the counts the options make
        possible (truncation or skipping, empty sentences when skipped, words when read word by
        word), zeros included, so every run of a task has the same rows."""
        o = self.options
        names = (["sentences_truncated", "tokens_truncated"] if o.long_sentences == "truncate"
                 else ["sentences_skipped"]) + (["sentences_empty"] if o.empty_sentences == "skip" else [])
        for split, counts in self.counts.items():
            for name in names + (["words_dropped"] if counts.by_words else []):
                n = counts.words if name.startswith("words") else counts.sentences
                result.add(name, getattr(counts, name), n, split=split, higher_is_better=False)
