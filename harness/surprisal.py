"""Per-token and per-word log-probabilities of sentences under a run's own scoring (`objbench score`).

What people otherwise get from minicons, for any objective with a sentence score: each token's
term of the objective's score (exact, pseudo or a bound's share, as its ``score_kind`` says) and
each word's, a word being a whitespace-separated piece of the text. A word's log-probability is
the sum of its sub-tokens' (`WORD_AGGREGATION`), so words and tokens add up to the same total.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from objbench.harness.errors import DataError, EmptyInputError
from objbench.harness.reading import TrainedModel

WORD_AGGREGATION = "sum of its sub-tokens' log-probabilities"


@dataclass
class ScoredSentence:
    """One sentence's log-probabilities (nats) under the run's scoring."""

    text: str
    total: float
    tokens: list[str]
    token_logprobs: list[float]
    words: list[str]  # whitespace-separated words that hold at least one token
    word_logprobs: list[float]
    word_of_token: list[int]  # index into ``words`` of each token's word


def read_sentences(texts: Sequence[str] | None, file: Path | None) -> list[str]:
    """The sentences to score: the given texts, or a UTF-8 file's non-blank lines."""
    if file is None:
        return list(texts or [])
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"--file {file}: no such file") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise DataError(f"--file {file}: not a UTF-8 text file ({exc.__class__.__name__}); "
                        f"give one sentence per line") from None
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise DataError(f"--file {file}: no sentence in it (every line is blank)")
    return sentences


def score_sentences(model: TrainedModel, sentences: list[str], variant: str | None = None) -> list[ScoredSentence]:
    """Every sentence scored whole; one longer than the run reads, or with no token, is refused."""
    for i, s in enumerate(sentences, 1):
        n = len(model.tokens(s))
        if n == 0:
            raise EmptyInputError(f"sentence {i} ({s!r}) has no tokens after tokenisation: nothing to score")
        if n > model.max_tokens:
            raise DataError(f"sentence {i} has {n} tokens, more than the {model.max_tokens} this run reads "
                            f"(model.max_len and the objective's extra positions); split it")
    per_token = model.token_scores(sentences, desc="score", variant=variant)
    return [_scored(model, s, logprobs.tolist()) for s, logprobs in zip(sentences, per_token)]


def _scored(model: TrainedModel, text: str, logprobs: list[float]) -> ScoredSentence:
    enc = model.tokenizer.encode(text, add_special_tokens=False)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    starts = [a for a, _ in spans]
    words_at = [max(0, bisect_right(starts, start) - 1) for start, _ in enc.offsets]  # the word it starts in
    kept = sorted(set(words_at))  # words with a token, in order
    word_of_token = [kept.index(w) for w in words_at]
    word_logprobs = [sum(lp for lp, w in zip(logprobs, word_of_token) if w == k) for k in range(len(kept))]
    return ScoredSentence(text, sum(logprobs), list(enc.tokens), logprobs,
                          [text[slice(*spans[w])] for w in kept], word_logprobs, word_of_token)


def scoring_statement(model: TrainedModel, variant: str | None) -> str:
    """One line: what the numbers are, so output never travels without it."""
    objective = model.scorer(variant)
    return (f"{model.run_dir}: objective {model.cfg.objective}, score {objective.score_kind} "
            f"({objective.score_method}); log-probabilities in nats; a word's is the {WORD_AGGREGATION}")


def write_jsonl(scored: list[ScoredSentence], path: Path, statement: str) -> None:
    """One JSON object per sentence, each carrying the scoring statement."""
    try:
        path.write_text("".join(json.dumps({**asdict(s), "scoring": statement}) + "\n" for s in scored),
                        encoding="utf-8")
    except OSError as exc:
        raise DataError(f"--out {path}: cannot write it ({exc.strerror}); give a path in an existing folder") from None


def format_table(scored: list[ScoredSentence]) -> str:
    """Per sentence: its total, then each word with its log-probability and its tokens'."""
    blocks = []
    for i, s in enumerate(scored, 1):
        lines = [f"sentence {i}: {s.total:.3f} nats over {len(s.tokens)} tokens, {len(s.words)} words"]
        for k, (word, lp) in enumerate(zip(s.words, s.word_logprobs)):
            parts = " ".join(f"{t} {p:.3f}" for t, p, w in zip(s.tokens, s.token_logprobs, s.word_of_token) if w == k)
            lines.append(f"  {word}\t{lp:.3f}\t[{parts}]")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
