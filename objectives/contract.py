"""The objective contract, checked on any registered objective, built-in or third-party.

`check_objective` is what ``objbench check-objective NAME`` runs and what the test suite runs
on every registered objective. Every check builds what it needs from the objective alone (a
vocabulary with its special tokens, a tiny fp64 encoder, the objective's own modules), so a
plugin author runs it without an objbench checkout. The checks:

* **shapes**: every field of a training batch has the batch's shape, targets are token ids
  and equal the clean token their ``target_source`` names, weights and normaliser are sane;
* **determinism**: the same generator seed gives the same batch and loss, and neither
  `Objective.make_batch`, `Objective.score_rows` nor `Objective.loss` touches torch's global
  RNG;
* **no leakage** and **visibility as declared**: each clean token is perturbed in turn with the
  objective's draws held fixed, and for every kind of target the loss trains
  (`Objective.predictions`: tokens, ELECTRA's replaced-token labels, ...) we record which
  outputs move. An output may depend only on the clean tokens `Objective.visibility` declares
  for its position, and never on its own target token unless the objective says so
  (``sees_own_target``); every declared dependence must be measured too;
* **scoring**: exact and pseudo scores make every token of a sentence a target exactly once;
  bound estimates have valid targets and positive weights and are reproducible; no scored
  token sees itself; an objective without a score says so and raises when asked for one;
* **loss gradients**: the loss is finite, every parameter of the objective's modules gets a
  gradient, and the gradient matches a central finite difference along a random direction;
* **FLOPs**: `Objective.flops` equals what torch's FLOP counter measures for the loss and its
  backward (on the math attention kernel, which the counter sees);
* **checkpoint round trip**: encoder, modules and optimizer state saved and restored into
  freshly initialised copies give bit-identical weights, loss and next optimizer step;
* **reading**: the attention features are read with shows text the same sides of context
  training showed it (left, right or both), the pooled position sees the whole sentence, and
  training and scoring rows fit the positions `Objective.positions_needed` declares.

How many rows: a leak that shows in a fraction p of training rows, independently per row, is
missed only if none of the N rows examined shows it, with probability (1 - p)^N. The leakage
checks examine N = SEEDS x ROWS = 8 x 64 = 512 rows of BLOCK = 12 tokens, so a leak in 1% of
rows is missed with probability 0.99^512 = 0.6% (caught with probability above 99%), one in
5% of rows with probability 4e-12. Within a leaking row detection is certain: a random fp64
encoder's output at a position that attends to a token moves by far more than the 1e-10
threshold when that token changes. What this cannot see: leaks that occur only under other
options (check those with ``--set``) or only in rows longer than BLOCK tokens. The whole check
takes a few seconds on one CPU core.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from objbench.harness import checkpoint as ckpt
from objbench.harness.config import ModelConfig, validate
from objbench.harness.errors import ScoringNotApplicable
from objbench.harness.model import Encoder
from objbench.harness.registry import OBJECTIVES
from objbench.objectives.base import (IGNORE, Objective, ObjectiveBatch, Options, Predictions, Vocab,
                                      attention_matrix, special_tokens)

SEEDS, ROWS, BLOCK = 8, 64, 12  # leakage: 512 rows of 12 clean tokens (see the module docstring)
VOCAB_SIZE = 40
MOVED = 1e-10  # an fp64 output "depends" on a token when it moves by more than this
SCORE_LENGTHS = range(1, 9)  # sentence lengths the scoring checks read
GRAD_STEP, GRAD_TOL = 1e-6, 1e-5  # central difference step and relative tolerance (fp64)


@dataclass(frozen=True)
class Check:
    """One check's outcome; ``detail`` says what was checked or, for a failure, where it failed."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'}  {self.name}: {self.detail}"


class _Failure(Exception):
    """A check's first failure, with the row, position and token it concerns."""


# -- what every check is built from -----------------------------------------------------------
def contract_vocab(cls: type[Objective], options: Options) -> Vocab:
    """A 40-token vocabulary: the base specials and those the objective needs with
    ``options``, then ordinary tokens of which a fixed 60% start a word (so whole-word masking
    has words of several tokens)."""
    specials = special_tokens(cls.specials_needed(options))
    word_start = torch.rand(VOCAB_SIZE, generator=torch.Generator().manual_seed(0)) < 0.6
    word_start[: len(specials)] = True
    return Vocab(VOCAB_SIZE, {s: i for i, s in enumerate(specials)}, word_start)


def build(name: str, options: dict | None = None) -> Objective:
    """The registered objective ``name`` with ``options`` (validated), on `contract_vocab`."""
    cls = OBJECTIVES.get(name)
    valid = validate(cls.Options, options or {}, where=f"options of objective {name!r}")
    return cls(valid, contract_vocab(cls, valid))


def tiny_config(objective: Objective) -> ModelConfig:
    """A 2-layer, 16-wide encoder with room for every row the checks build."""
    longest = max(BLOCK, max(SCORE_LENGTHS))
    return ModelConfig(d_model=16, n_layers=2, n_heads=2, d_ff=32,
                       max_len=max(64, objective.positions_needed(longest)))


def tiny_models(objective: Objective, seed: int = 0) -> tuple[Encoder, nn.ModuleDict]:
    """A tiny fp64 encoder and the objective's modules, initialised from ``seed`` without
    touching the caller's global RNG."""
    cfg = tiny_config(objective)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = Encoder(cfg, objective.vocab.size).double().eval()
        modules = nn.ModuleDict(objective.build_modules(cfg, objective.vocab.size)).double().eval()
    return encoder, modules


def random_blocks(objective: Objective, rows: int, length: int, seed: int) -> torch.Tensor:
    """Clean blocks of random non-special tokens."""
    return objective.vocab.random_tokens((rows, length), torch.Generator().manual_seed(seed))


def _other_token(objective: Objective, tokens: torch.Tensor) -> torch.Tensor:
    """A different non-special token in place of each of ``tokens``, starting a word exactly
    when it does: word boundaries (whole-word masking) are structure, not token identity."""
    v = objective.vocab
    successor = torch.arange(v.size)
    ordinary = torch.arange(len(v.specials), v.size)
    for starts in (True, False):
        same = ordinary[v.word_start[ordinary] == starts]
        successor[same] = same.roll(-1)
    return successor[tokens]


# -- visibility, measured -------------------------------------------------------------------
@dataclass
class Measured:
    """For each kind of target in ``batch``: its predictions and, per target, which clean
    tokens its output moved with (bool ``(N, T)``)."""

    batch: ObjectiveBatch
    predictions: list[Predictions]
    seen: list[torch.Tensor]


def measured_visibility(objective: Objective, blocks: torch.Tensor, seed: int, encoder: Encoder,
                        modules: nn.ModuleDict, device: str | torch.device = "cpu",
                        threshold: float = MOVED) -> Measured:
    """Perturb each clean token of ``blocks`` in turn (the objective's draws held fixed by
    ``seed``) and record which targets' outputs move by more than ``threshold``."""
    def run(b: torch.Tensor) -> tuple[ObjectiveBatch, list[Predictions]]:
        batch = objective.make_batch(b.clone(), torch.Generator().manual_seed(seed))
        with torch.no_grad():
            found = objective.predictions(encoder, modules, batch.to(device))
        return batch, [replace(p, where=p.where.cpu(), values=p.values.cpu(), target_source=p.target_source.cpu())
                       for p in found]

    batch, ref = run(blocks)
    seen = [torch.zeros(len(p.values), blocks.shape[1], dtype=torch.bool) for p in ref]
    for j in range(blocks.shape[1]):
        perturbed = blocks.clone()
        perturbed[:, j] = _other_token(objective, blocks[:, j])
        _, moved = run(perturbed)
        for k, (p, q) in enumerate(zip(ref, moved, strict=True)):
            if not torch.equal(p.where, q.where):
                b = int(torch.nonzero((p.where != q.where).any(1))[0])
                raise _Failure(f"seed {seed} row {b}: which positions hold {p.kind} targets changed when "
                               f"clean token {j} changed; the choice of targets must not depend on token identity")
            seen[k][:, j] = (q.values - p.values).abs().flatten(1).amax(1) > threshold
    return Measured(batch, ref, seen)


def _target_name(m: Measured, k: int, n: int, seed: int, blocks: torch.Tensor) -> str:
    p = m.predictions[k]
    b, i = (int(x) for x in torch.nonzero(p.where)[n])
    own = int(p.target_source[n])
    about = f", its own token: clean index {own} = token {int(blocks[b, own])}" if own >= 0 else ""
    return f"seed {seed} row {b}, {p.kind} target at position {i}{about}"


def _leak_checks(objective: Objective) -> tuple[Check, Check]:
    """(no leakage, visibility as declared) over SEEDS x ROWS rows."""
    encoder, modules = tiny_models(objective)
    leak = over = None
    for seed in range(SEEDS):
        blocks = random_blocks(objective, ROWS, BLOCK, seed=1000 + seed)
        try:
            m = measured_visibility(objective, blocks, seed, encoder, modules)
        except _Failure as exc:
            failed = Check("no leakage", False, str(exc))
            return failed, Check("visibility as declared", False, "not measured: " + str(exc))
        declared = objective.visibility(m.batch, BLOCK)
        for k, p in enumerate(m.predictions):
            allowed = declared[p.where]
            own = torch.zeros_like(allowed)
            has_own = p.target_source >= 0
            own[has_own, p.target_source[has_own]] = True
            if not (objective.sees_own_target or p.sees_own_target):
                allowed = allowed & ~own
            bad = m.seen[k] & ~allowed
            if leak is None and bad.any():
                n, j = (int(x) for x in torch.nonzero(bad)[0])
                what = "its own token" if own[n, j] else "declared unseen"
                leak = (f"{_target_name(m, k, n, seed, blocks)}: its output depends on clean index {j} "
                        f"(token {int(blocks[int(torch.nonzero(p.where)[n][0]), j])}), {what}")
            missing = declared[p.where] & ~m.seen[k]
            if over is None and missing.any():
                n, j = (int(x) for x in torch.nonzero(missing)[0])
                over = (f"{_target_name(m, k, n, seed, blocks)}: declares clean index {j} visible, but "
                        f"its output does not depend on it")
    kinds = ", ".join(p.kind for p in m.predictions)
    rows = f"{SEEDS * ROWS} rows of {BLOCK} tokens, target kinds: {kinds}"
    return (Check("no leakage", leak is None, leak or f"no target saw a token it may not see ({rows})"),
            Check("visibility as declared", over is None, over or f"every declared dependence measured ({rows})"))


# -- the other checks, one function each; each raises _Failure on its first problem ------------
def _check_shapes(objective: Objective) -> str:
    for seed in range(SEEDS):
        blocks = random_blocks(objective, ROWS, BLOCK, seed=2000 + seed)
        batch = objective.make_batch(blocks.clone(), torch.Generator().manual_seed(seed))
        shape = batch.input_ids.shape
        if shape[0] != ROWS:
            raise _Failure(f"seed {seed}: {ROWS} blocks gave {shape[0]} rows")
        named = {"targets": batch.targets, "source_index": batch.source_index,
                 "target_source": batch.target_source, "position_ids": batch.position_ids,
                 "segment_ids": batch.segment_ids, "weights": batch.weights}
        for name, t in named.items():
            if t is not None and t.shape != shape:
                raise _Failure(f"seed {seed}: {name} has shape {tuple(t.shape)}, input_ids {tuple(shape)}")
        if isinstance(batch.attn, torch.Tensor) and (batch.attn.shape != (*shape, shape[1]) or
                                                     batch.attn.dtype != torch.bool):
            raise _Failure(f"seed {seed}: attn must be bool {(*shape, shape[1])}, got "
                           f"{batch.attn.dtype} {tuple(batch.attn.shape)}")
        _check_targets(batch, blocks, objective.vocab.size, f"seed {seed}")
        if not (batch.loss_normaliser > 0 and torch.isfinite(torch.tensor(batch.loss_normaliser))):
            raise _Failure(f"seed {seed}: loss normaliser {batch.loss_normaliser} is not a positive number")
    return f"{SEEDS} batches of {ROWS} rows: fields aligned, targets are the clean tokens they name"


def _check_targets(batch: ObjectiveBatch, tokens: torch.Tensor, vocab_size: int, where: str) -> None:
    """Targets are token ids, equal to the clean token their source names; weights are finite
    and non-negative. ``tokens`` is ``(B, T)`` blocks or one ``(n,)`` sentence."""
    has = batch.targets != IGNORE
    values = batch.targets[has]
    if values.numel() and (values.min() < 0 or values.max() >= vocab_size):
        raise _Failure(f"{where}: a target is not a token id (range {int(values.min())}..{int(values.max())})")
    sourced = has & (batch.target_source >= 0)
    for b, i in torch.nonzero(sourced).tolist():
        k = int(batch.target_source[b, i])
        clean = int(tokens[k] if tokens.dim() == 1 else tokens[b, k])
        if int(batch.targets[b, i]) != clean:
            raise _Failure(f"{where} row {b}, target at position {i}: target {int(batch.targets[b, i])} is not "
                           f"the clean token {clean} at index {k} it names")
    if batch.weights is not None:
        w = batch.weights[has]
        if not torch.isfinite(w).all() or (w < 0).any():
            raise _Failure(f"{where}: target weights must be finite and non-negative")


def _batch_equal(a: ObjectiveBatch, b: ObjectiveBatch) -> str | None:
    """The first field in which two batches differ, or None (a composite's component batches
    compared field by field too)."""
    if type(a) is not type(b):
        return "type"
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "shares":
            inner = [_batch_equal(s.batch, t.batch) for s, t in zip(x, y)]
            same = len(x) == len(y) and all(d is None for d in inner)
        elif isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
            same = all(torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k] for k in x)
        elif isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            same = x.shape == y.shape and torch.equal(x, y)
        else:
            same = x == y
        if not same:
            return f.name
    return None


@contextmanager
def _global_rng_untouched(what: str) -> Iterator[None]:
    before = torch.get_rng_state()
    yield
    if not torch.equal(before, torch.get_rng_state()):
        raise _Failure(f"{what} drew from torch's global RNG; draw from the generator it is handed "
                       f"(or, for the loss, from draws stored in the batch's extra)")


def _check_determinism(objective: Objective) -> str:
    encoder, modules = tiny_models(objective)
    blocks = random_blocks(objective, 8, BLOCK, seed=3)
    with _global_rng_untouched("make_batch"):
        a = objective.make_batch(blocks.clone(), torch.Generator().manual_seed(7))
        b = objective.make_batch(blocks.clone(), torch.Generator().manual_seed(7))
    differs = _batch_equal(a, b)
    if differs:
        raise _Failure(f"two batches from the same seed differ in {differs}")
    with _global_rng_untouched("loss"), torch.no_grad():
        first, second = (objective.loss(encoder, modules, a).summed for _ in range(2))
    if not torch.equal(first, second):
        raise _Failure(f"the loss of one batch differs between two calls ({float(first)} vs {float(second)})")
    if objective.score_kind != "none":
        with _global_rng_untouched("score_rows"):
            tokens = random_blocks(objective, 1, 6, seed=4)[0]
            differs = _batch_equal(objective.score_rows(tokens), objective.score_rows(tokens))
        if differs:
            raise _Failure(f"two scorings of one sentence differ in {differs}")
    return "same seed, same batch and loss; no draw from torch's global RNG"


def _check_scoring(objective: Objective) -> str:
    kind = objective.score_kind
    tokens = random_blocks(objective, 1, max(SCORE_LENGTHS), seed=5)[0]
    if kind == "none":
        try:
            objective.score_rows(tokens)
        except ScoringNotApplicable:
            return "no sentence score (score_kind none), and score_rows says so"
        raise _Failure("score_kind is 'none' but score_rows returned rows")
    encoder, _ = tiny_models(objective)
    for n in SCORE_LENGTHS:
        sentence = tokens[:n]
        try:
            rows = objective.score_rows(sentence)
        except ScoringNotApplicable:
            raise _Failure(f"score_kind is {kind!r} but score_rows raises ScoringNotApplicable") from None
        where = f"{n}-token sentence"
        _check_targets(rows, sentence, objective.vocab.size, where)
        has = rows.targets != IGNORE
        sources = rows.target_source[has]
        if (sources < 0).any():
            raise _Failure(f"{where}: a scoring target names no token of the sentence (target_source -1)")
        weights = rows.weights[has] if rows.weights is not None else torch.ones(len(sources))
        if kind in ("exact", "pseudo"):
            if sorted(sources.tolist()) != list(range(n)):
                raise _Failure(f"{where}: an {kind} score makes every token a target exactly once; targets "
                               f"name tokens {sorted(sources.tolist())}")
            if not torch.all(weights == 1):
                raise _Failure(f"{where}: an {kind} score weighs every target 1")
        elif not (weights > 0).all():
            raise _Failure(f"{where}: a bound estimate weighs its targets by positive numbers")
        _no_scored_token_sees_itself(objective, encoder, sentence, rows, where)
    return f"{kind} score ({objective.score_method or 'no description'}) on sentences of {SCORE_LENGTHS.start}" \
           f"-{SCORE_LENGTHS.stop - 1} tokens: targets valid, none sees itself"


def _no_scored_token_sees_itself(objective: Objective, encoder: Encoder, sentence: torch.Tensor,
                                 rows: ObjectiveBatch, where: str) -> None:
    def logits(r: ObjectiveBatch) -> torch.Tensor:
        with torch.no_grad():
            return encoder.logits(encoder(r.input_ids, r.attn, r.position_ids, r.segment_ids))

    ref = logits(rows)
    has = rows.targets != IGNORE
    for j in range(len(sentence)):
        perturbed = sentence.clone()
        perturbed[j] = _other_token(objective, sentence[j])
        moved = (logits(objective.score_rows(perturbed)) - ref).abs().amax(-1) > MOVED
        own = has & (rows.target_source == j) & moved
        if own.any():
            b, i = (int(x) for x in torch.nonzero(own)[0])
            raise _Failure(f"{where} row {b}, scored target at position {i} sees its own token "
                           f"(index {j} = token {int(sentence[j])})")


def _loss_batch(objective: Objective) -> ObjectiveBatch:
    return objective.make_batch(random_blocks(objective, 4, BLOCK, seed=6), torch.Generator().manual_seed(8))


def _check_gradients(objective: Objective) -> str:
    encoder, modules = tiny_models(objective)
    batch = _loss_batch(objective)
    params = [*encoder.parameters(), *modules.parameters()]
    loss = objective.loss(encoder, modules, batch).summed
    if not torch.isfinite(loss):
        raise _Failure(f"the loss is {float(loss)}")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for (name, p), g in zip(modules.named_parameters(), grads[len(list(encoder.parameters())):], strict=True):
        if g is None or not g.any():
            raise _Failure(f"the objective's module parameter {name} gets no gradient from the loss")
    if any(g is not None and not torch.isfinite(g).all() for g in grads):
        raise _Failure("a gradient is not finite")
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
                 for i, p in enumerate(params)]
    analytic = sum(float((g * v).sum()) for g, v in zip(grads, direction) if g is not None)

    def loss_at(step: float) -> float:
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(step * v)
            value = float(objective.loss(encoder, modules, batch).summed)
            for p, v in zip(params, direction):
                p.sub_(step * v)
        return value

    numeric = (loss_at(GRAD_STEP) - loss_at(-GRAD_STEP)) / (2 * GRAD_STEP)
    if abs(numeric - analytic) > GRAD_TOL * max(1.0, abs(analytic)):
        raise _Failure(f"the gradient along a random direction is {analytic:.8g}, a finite difference "
                       f"of the loss gives {numeric:.8g}")
    return (f"loss finite, gradients finite and reaching every module parameter, equal to a finite "
            f"difference ({analytic:.6g} vs {numeric:.6g})")


def _check_flops(objective: Objective) -> str:
    encoder, modules = tiny_models(objective)
    batch = _loss_batch(objective)
    pad = objective.vocab["[PAD]"]
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        for b in range(batch.input_ids.shape[0]):  # each row as it runs alone, without padding
            objective.loss(encoder, modules, batch.row(b, pad)).summed.backward()
    counted = objective.flops(encoder.cfg, objective.vocab.size, batch)
    if counter.get_total_flops() != counted:
        raise _Failure(f"flops() counts {counted:.0f} for the loss and its backward, torch's FLOP "
                       f"counter {counter.get_total_flops():.0f} with each row run alone")
    return f"flops() equals torch's FLOP counter ({counted:.0f} on 4 rows, each run alone)"


def _check_checkpoint(objective: Objective) -> str:
    batch = _loss_batch(objective)

    def trained(seed: int) -> tuple[Encoder, nn.ModuleDict, torch.optim.Optimizer]:
        encoder, modules = tiny_models(objective, seed)
        optimizer = torch.optim.AdamW([*encoder.parameters(), *modules.parameters()], lr=1e-3)
        return encoder, modules, optimizer

    def step(encoder: Encoder, modules: nn.ModuleDict, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        loss = objective.loss(encoder, modules, batch).summed
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    saved, restored = trained(0), trained(1)
    step(*saved)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "step-0000001"
        ckpt.save(folder, saved[0], saved[2], {"step": 1}, saved[1])
        ckpt.restore(folder, restored[0], restored[2], modules=restored[1])
    for name, (a, b) in _state_pairs(saved, restored):
        if not torch.equal(a, b):
            raise _Failure(f"{name} differs after the round trip")
    if not torch.equal(step(*saved), step(*restored)):
        raise _Failure("the loss after restoring differs")
    for name, (a, b) in _state_pairs(saved, restored):
        if not torch.equal(a, b):
            raise _Failure(f"{name} differs after one more optimizer step")
    n = sum(p.numel() for p in saved[1].parameters())
    return f"encoder, {n} module parameters and optimizer state restored bit-identically"


def _state_pairs(a: tuple, b: tuple) -> Iterator[tuple[str, tuple[torch.Tensor, torch.Tensor]]]:
    (enc_a, mod_a, _), (enc_b, mod_b, _) = a, b
    for prefix, x, y in (("encoder.", enc_a, enc_b), (ckpt.MODULES_PREFIX, mod_a, mod_b)):
        sx, sy = x.state_dict(), y.state_dict()
        for key in sx:
            yield prefix + key, (sx[key], sy[key])


SIDES = {-1: "left context", 0: "itself", 1: "right context"}


def _sides(attn: torch.Tensor, source: torch.Tensor) -> set[int]:
    """Which sides of its own clean token a position showing text attends to text on."""
    b, i, j = torch.nonzero(attn & (source >= 0)[:, :, None] & (source >= 0)[:, None, :], as_tuple=True)
    return set(torch.sign(source[b, j] - source[b, i]).tolist())


def _check_reading(objective: Objective) -> str:
    batch = objective.make_batch(random_blocks(objective, 8, BLOCK, seed=9), torch.Generator().manual_seed(9))
    batch = objective.reading_batch(batch)
    trained = _sides(attention_matrix(batch.attn, batch.input_ids), batch.source_index)
    ids = torch.cat([torch.tensor([objective.vocab["[CLS]"]]), random_blocks(objective, 1, BLOCK, seed=10)[0]])[None]
    attn = attention_matrix(objective.reading_attention, ids)
    read = _sides(attn, torch.arange(-1, BLOCK)[None])
    if read != trained:
        name = lambda sides: ", ".join(SIDES[s] for s in sorted(sides)) or "nothing"  # noqa: E731
        raise _Failure(f"training shows text its {name(trained)}; features are read with "
                       f"{objective.reading_attention!r} attention, which shows it {name(read)}")
    pooled = {"cls": 0, "last": BLOCK, "mean": None}[objective.pooling]
    if pooled is not None and not attn[0, pooled, 1:].all():
        raise _Failure(f"pooling {objective.pooling!r} under {objective.reading_attention!r} attention reads a "
                       f"position that does not see the whole sentence")
    _check_positions(objective)
    return (f"{objective.reading_attention} attention, {objective.pooling} pooling: the sides of context "
            f"training shows text; rows fit positions_needed")


def _check_positions(objective: Objective) -> None:
    """Training and scoring rows fit the positions the objective declares (configs are checked
    and sentences cut by that declaration, so an understatement would crash a run)."""
    def used(batch: ObjectiveBatch) -> int:
        pos = batch.position_ids
        return int(pos.max()) + 1 if pos is not None else batch.input_ids.shape[1]

    for n in (5, BLOCK):
        need = objective.positions_needed(n)
        train = used(objective.make_batch(random_blocks(objective, 4, n, seed=n), torch.Generator().manual_seed(0)))
        if train > need:
            raise _Failure(f"a training row of {n} tokens uses {train} positions, positions_needed says {need}")
        if objective.score_kind != "none":
            scored = used(objective.score_rows(random_blocks(objective, 1, n, seed=n)[0]))
            if scored > need:
                raise _Failure(f"scoring rows of a {n}-token sentence use {scored} positions, "
                               f"positions_needed says {need}")


CHECKS: list[tuple[str, Callable[[Objective], str]]] = [
    ("shapes", _check_shapes), ("determinism", _check_determinism), ("scoring", _check_scoring),
    ("loss gradients", _check_gradients), ("FLOPs", _check_flops),
    ("checkpoint round trip", _check_checkpoint), ("reading", _check_reading),
]


def check_objective(name: str, options: dict | None = None) -> list[Check]:
    """Every check of the contract on the registered objective ``name`` with ``options``.

    A bad name or bad options raise (`PluginError`, `ConfigError`); a check that fails, or
    raises inside the objective, is a failed `Check`, and the others still run. Runs on one
    thread (the models are tiny: a second thread only adds waiting), restored afterwards."""
    objective = build(name, options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = [_run(title, check, objective) for title, check in CHECKS[:2]]
        results += _guarded_leak_checks(objective)
        return results + [_run(title, check, objective) for title, check in CHECKS[2:]]
    finally:
        torch.set_num_threads(threads)


def _run(title: str, check: Callable[[Objective], str], objective: Objective) -> Check:
    try:
        return Check(title, True, check(objective))
    except _Failure as exc:
        return Check(title, False, str(exc))
    except Exception as exc:  # the objective's own code raised: a failure, not a crash of the check
        return Check(title, False, f"raised {type(exc).__name__}: {exc}")


def _guarded_leak_checks(objective: Objective) -> tuple[Check, Check]:
    try:
        return _leak_checks(objective)
    except Exception as exc:
        failed = f"raised {type(exc).__name__}: {exc}"
        return Check("no leakage", False, failed), Check("visibility as declared", False, failed)
