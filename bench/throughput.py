"""Training-step throughput: objbench against Hugging Face ``transformers``, in one process.

Every contender runs a full step (batch construction, forward, backward, grad clipping at
1.0, AdamW) on the same random token blocks, at the same model size and thread count.
Contenders are interleaved: every round runs each of them in turn, compared contenders side
by side, in reverse order every other round, so load from other processes hits all of them
alike. Every round also times an fp32 square matmul; the best of those is the peak that MFU
divides by (on a shared machine a contended peak would inflate MFU, even past 100%). Ratios
and MFU are given two ways: the median over rounds, and best round against best round (the
least disturbed estimate when other processes come and go).

objbench runs its real ``Trainer.train_step`` (``make_batch`` included). The Hugging Face
side runs ``DataCollatorForLanguageModeling`` inside the step, then the model with
``labels``, the same clipping and an AdamW with the same parameter groups.

FLOPs follow ``harness/flops.py``: matmuls only, 2 per multiply-add, attention over the full
T x T scores, backward = 2x forward. *Useful* FLOPs are those that produce a loss: the LM head
and the last block's query side (queries, output projection, feed-forward) count only at
positions with a target. *Executed* FLOPs add what a contender computes and throws away
(Hugging Face runs its last layer and its head, and BERT its head transform, at every position).

    python bench/throughput.py [--size reference|tiny] [--rounds N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from objbench.bench.common import load_average, markdown, matmul_peak, provenance, write_json
from objbench.harness.blocks import batch_rows
from objbench.harness.config import BudgetConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from objbench.harness.data import PreparedData
from objbench.harness.flops import train_flops
from objbench.harness.model import query_rows
from objbench.harness.trainer import Trainer
from objbench.objectives.base import IGNORE, Vocab, special_tokens, with_cls
from objbench.objectives.electra import ElectraOptions, generator_config

LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 2e-3, (0.9, 0.98), 0.01, 1.0  # objbench's TrainConfig defaults


@dataclass(frozen=True)
class Size:
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    block: int  # clean tokens per block
    batch: int  # blocks per step
    peak_n: int  # side of the square matmul that measures the peak

    def model(self) -> ModelConfig:
        """objbench's config at this size: dropout 0 (its default); room for masked-ar's
        longest row (part A + part B <= 2 * block + 2)."""
        return ModelConfig(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                           d_ff=self.d_ff, max_len=2 * self.block + 2)


SIZES = {
    "reference": Size(vocab=8192, d_model=256, n_layers=4, n_heads=4, d_ff=1024, block=128, batch=32, peak_n=2048),
    "tiny": Size(vocab=256, d_model=32, n_layers=2, n_heads=2, d_ff=64, block=16, batch=4, peak_n=256),
}
SPECIALS = special_tokens(["[S]", "[E]"])


@dataclass
class Contender:
    name: str
    side: str  # "objbench" | "transformers"
    what: str  # objective or model class
    dropout: float
    step: Callable[[], tuple[float, float]]  # runs one step; returns (useful, executed) FLOPs


def generator_size(size: Size) -> Size:
    """``size`` narrowed as `electra` narrows its generator (default width)."""
    g = generator_config(size.model(), ElectraOptions().generator_width)
    return replace(size, d_model=g.d_model, n_heads=g.n_heads, d_ff=g.d_ff)


def random_data(size: Size, seed: int = 0) -> PreparedData:
    """Uniform random non-special tokens: the step's cost does not depend on the text."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(len(SPECIALS), size.vocab, (16 * size.batch, size.block), dtype=np.uint16)
    vocab = Vocab(size.vocab, {s: i for i, s in enumerate(SPECIALS)}, torch.ones(size.vocab, dtype=torch.bool))
    return PreparedData(tokenizer=None, tokenizer_path=Path(os.devnull), vocab=vocab, train=blocks,
                        validation=blocks[: size.batch], corpus_hash="random", tokenizer_hash="random")


def blocks_at(data: PreparedData, batch: int, step: int) -> torch.Tensor:
    """The rows objbench's trainer reads at ``step`` (seed 0), so both sides see the same data."""
    return torch.from_numpy(data.train[np.sort(batch_rows(len(data.train), batch, step, 0))].astype(np.int64))


def objbench_contender(name: str, size: Size, data: PreparedData, threads: int, objective: str,
                       options: dict[str, Any] | None = None) -> Contender:
    cfg = RunConfig(
        objective=objective, options=options or {}, model=size.model(),
        data=DataConfig(vocab_size=size.vocab, block_size=size.block),
        train=TrainConfig(batch_size=size.batch, threads=threads, device="cpu", precision="fp32",
                          lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP,
                          schedule="constant", warmup=0.0),  # the peak lr from the first step, as HF's side
        budget=BudgetConfig(steps=10**9),  # never reached
    )
    trainer = Trainer(cfg, Path(os.devnull), data=data, progress=False)  # train_step writes nothing

    def step() -> tuple[float, float]:
        before = trainer.counters.flops
        trainer.train_step()
        flops = trainer.counters.flops - before
        return flops, flops

    label = objective + "".join(f" {k}={v}" for k, v in (options or {}).items())
    return Contender(name, "objbench", label, 0.0, step)


def hf_tokenizer(vocab: int):
    """A word-level fast tokenizer over ``vocab`` ids, only so the collator knows the specials."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {s: i for i, s in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), vocab)}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="[UNK]")),
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]")


def hf_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW exactly as objbench's trainer builds it: decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                              {"params": rest, "weight_decay": 0.0}], lr=LR, betas=BETAS, fused=True)


def hf_contender(name: str, size: Size, data: PreparedData, causal: bool, defaults: bool) -> Contender:
    """BertForMaskedLM (causal=False) or GPT2LMHeadModel; ``defaults`` keeps HF's dropout
    (0.1) and, for GPT-2, its tanh GELU; otherwise dropout 0 and exact GELU like objbench."""
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling,
                              GPT2Config, GPT2LMHeadModel)

    torch.manual_seed(0)
    tok = hf_tokenizer(size.vocab)
    d, T, B = size.d_model, size.block, size.batch
    if causal:
        extra = {} if defaults else {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                                     "activation_function": "gelu"}
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=size.vocab, n_embd=d, n_layer=size.n_layers, n_head=size.n_heads,
            n_inner=size.d_ff, n_positions=2 * T + 2, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, **extra))
        dropout = model.config.resid_pdrop
    else:
        extra = {} if defaults else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        model = BertForMaskedLM(BertConfig(
            vocab_size=size.vocab, hidden_size=d, num_hidden_layers=size.n_layers,
            num_attention_heads=size.n_heads, intermediate_size=size.d_ff,
            max_position_embeddings=2 * T + 2, **extra))
        dropout = model.config.hidden_dropout_prob
    model.train()
    collator = DataCollatorForLanguageModeling(tok, mlm=not causal, mlm_probability=0.15, seed=0)
    opt = hf_optimizer(model)
    cfg = size.model()
    counter = iter(range(10**9))

    def step() -> tuple[float, float]:
        blocks = blocks_at(data, B, next(counter))
        # BERT reads [CLS] + block like objbench's mlm; GPT-2 reads the block (same length as clm's input)
        batch = collator(list(blocks if causal else with_cls(blocks, tok.cls_token_id)))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n, L = batch["input_ids"].shape
        targets = n * (L - 1) if causal else int((batch["labels"] != IGNORE).sum())
        rows = None if causal else query_rows(batch["labels"] != IGNORE)  # what the loss needs
        useful = train_flops(cfg, size.vocab, n, L, targets, None if rows is None else rows.shape[1])
        executed = train_flops(cfg, size.vocab, n, L, n * L)  # every block and the head at every position
        if not causal:
            executed += 3 * 2 * d * d * n * L  # BERT's head transform (dense d x d) at every position
        return useful, executed

    return Contender(name, "transformers", type(model).__name__, dropout, step)


def build_contenders(size: Size, threads: int, only: list[str] | None) -> list[Contender]:
    data = random_data(size)
    makers: dict[str, Callable[[str], Contender]] = {  # compared contenders are neighbours
        "hf-bert-default": lambda n: hf_contender(n, size, data, causal=False, defaults=True),
        "hf-bert": lambda n: hf_contender(n, size, data, causal=False, defaults=False),
        "ob-mlm": lambda n: objbench_contender(n, size, data, threads, "mlm"),
        "ob-mntp": lambda n: objbench_contender(n, size, data, threads, "mntp"),
        "ob-electra": lambda n: objbench_contender(n, size, data, threads, "electra"),
        # electra's generator alone: an mlm of its size, masking what it masks (its share of the step)
        "ob-electra-generator": lambda n: objbench_contender(
            n, generator_size(size), data, threads, "mlm", {"p_mask": 1.0, "p_random": 0.0, "p_keep": 0.0}),
        "ob-mlm-0.5": lambda n: objbench_contender(n, size, data, threads, "mlm", {"mask_rate": 0.5}),
        "ob-mdlm": lambda n: objbench_contender(n, size, data, threads, "mdlm"),
        "ob-mar-0.15": lambda n: objbench_contender(n, size, data, threads, "masked-ar", {"r": 0.15}),
        "ob-mar-1.0": lambda n: objbench_contender(n, size, data, threads, "masked-ar", {"r": 1.0}),
        "ob-clm": lambda n: objbench_contender(n, size, data, threads, "clm"),
        "hf-gpt2": lambda n: hf_contender(n, size, data, causal=True, defaults=False),
        "hf-gpt2-default": lambda n: hf_contender(n, size, data, causal=True, defaults=True),
    }
    unknown = set(only or []) - set(makers)
    if unknown:
        raise SystemExit(f"unknown contenders {sorted(unknown)}; known: {', '.join(makers)}")
    return [make(name) for name, make in makers.items() if not only or name in only]


# (a, b, how, target): "speedup" = tok/s of a / tok/s of b; "time" = step time of a / of b
COMPARISONS = [
    ("ob-mlm", "hf-bert", "speedup", ">= 2.0"),
    ("ob-mlm", "hf-bert-default", "speedup", None),
    ("ob-clm", "hf-gpt2", "speedup", ">= 1.2"),
    ("ob-clm", "hf-gpt2-default", "speedup", None),
    ("ob-mar-0.15", "ob-mlm", "time", "<= 1.5"),
    ("ob-mntp", "ob-mlm", "time", "<= 1.1"),
    ("ob-mdlm", "ob-mlm-0.5", "time", "<= 1.1"),  # the same expected targets: E[t] = (1 + eps) / 2
    ("ob-electra", "ob-mlm", "time", None),
    ("ob-electra-generator", "ob-electra", "time", None),
    ("ob-mar-1.0", "ob-clm", "time", None),
]
MFU_TARGETS = {"ob-mlm": ">= 0.6"}


def meets(value: float, target: str | None) -> bool | None:
    if target is None:
        return None
    op, bound = target.split()
    return value >= float(bound) if op == ">=" else value <= float(bound)


def run(size_name: str, rounds: int, steps: int, warmup: int, threads: int,
        only: list[str] | None = None) -> dict[str, Any]:
    torch.set_num_threads(threads)
    size = SIZES[size_name]
    info = provenance("transformers")
    contenders = build_contenders(size, threads, only)
    for c in contenders:
        for _ in range(warmup):
            c.step()
    tokens_per_step = size.batch * size.block  # clean tokens: the same for every contender
    per, peaks, loads = time_rounds(contenders, rounds, steps, tokens_per_step, size.peak_n)
    peak = max(peaks)
    return {
        **info, "load_average_after": load_average(),
        "size": size_name, "config": {**size.__dict__, "threads": threads, "dtype": "float32",
                                      "rounds": rounds, "steps_per_round": steps, "warmup_steps": warmup,
                                      "tokens_per_step": tokens_per_step},
        "peak_flops": peaks, "load_1min_per_round": loads,
        "contenders": {c.name: summarise(c, per[c.name], peak) for c in contenders},
        "comparisons": compare(per),
    }


def time_rounds(contenders: list[Contender], rounds: int, steps: int, tokens_per_step: int,
                peak_n: int) -> tuple[dict[str, dict[str, list[float]]], list[float], list[float]]:
    """Per contender and round: tokens/s, seconds and FLOPs per step. Rounds alternate the
    contenders' order and measure the matmul peak and load before each, so a machine that
    slows down mid-run shows in every contender alike."""
    peaks: list[float] = []
    loads: list[float] = []
    per: dict[str, dict[str, list[float]]] = {
        c.name: {"tokens_per_s": [], "step_s": [], "useful": [], "executed": []} for c in contenders}
    for r in range(rounds):
        peaks.append(matmul_peak(peak_n))
        loads.append(load_average()[0])
        for c in contenders if r % 2 == 0 else contenders[::-1]:
            useful = executed = 0.0
            start = time.perf_counter()
            for _ in range(steps):
                u, e = c.step()
                useful, executed = useful + u, executed + e
            seconds = time.perf_counter() - start
            p = per[c.name]
            p["tokens_per_s"].append(steps * tokens_per_step / seconds)
            p["step_s"].append(seconds / steps)
            p["useful"].append(useful / steps)  # FLOPs per step
            p["executed"].append(executed / steps)
    return per, peaks, loads


def summarise(c: Contender, p: dict[str, list[float]], peak: float) -> dict[str, Any]:
    """One contender's rounds as medians, extremes and MFU against the best measured peak."""
    useful_mfu = [f / s / peak for f, s in zip(p["useful"], p["step_s"], strict=True)]
    executed_mfu = [f / s / peak for f, s in zip(p["executed"], p["step_s"], strict=True)]
    target = MFU_TARGETS.get(c.name)
    return {
        "side": c.side, "what": c.what, "dropout": c.dropout,
        "tokens_per_s": p["tokens_per_s"], "step_s": p["step_s"],
        "tokens_per_s_min": min(p["tokens_per_s"]), "tokens_per_s_median": statistics.median(p["tokens_per_s"]),
        "tokens_per_s_max": max(p["tokens_per_s"]), "step_s_median": statistics.median(p["step_s"]),
        "useful_flops_per_step": statistics.mean(p["useful"]),
        "executed_flops_per_step": statistics.mean(p["executed"]),
        "useful_mfu_per_round": useful_mfu,
        "useful_mfu": statistics.median(useful_mfu),
        "useful_mfu_best": max(useful_mfu),
        "executed_mfu": statistics.median(executed_mfu),
        "target": target,
        "meets_median": meets(statistics.median(useful_mfu), target),
        "meets_best": meets(max(useful_mfu), target),
    }


def compare(per: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """`COMPARISONS` between contenders that ran: per-round ratios (speedup of tokens/s, or
    ratio of step seconds), their median and the ratio of the best rounds."""
    comparisons = []
    for a, b, how, target in COMPARISONS:
        if a not in per or b not in per:
            continue
        if how == "speedup":
            ratios = [x / y for x, y in zip(per[a]["tokens_per_s"], per[b]["tokens_per_s"], strict=True)]
            best = max(per[a]["tokens_per_s"]) / max(per[b]["tokens_per_s"])
        else:
            ratios = [x / y for x, y in zip(per[a]["step_s"], per[b]["step_s"], strict=True)]
            best = min(per[a]["step_s"]) / min(per[b]["step_s"])
        med = statistics.median(ratios)
        comparisons.append({"a": a, "b": b, "how": how, "per_round": ratios, "median": med, "best": best,
                            "target": target, "meets_median": meets(med, target),
                            "meets_best": meets(best, target)})
    return comparisons


def report(res: dict[str, Any]) -> str:
    cfg = res["config"]
    peaks = res["peak_flops"]
    head = (f"{res['date']} | {res['cpu']} | {cfg['threads']} threads | torch {res['versions']['torch']} | "
            f"transformers {res['versions']['transformers']} | load {res['load_average_before']} -> "
            f"{res['load_average_after']}\n\nsize {res['size']}: vocab {cfg['vocab']}, d {cfg['d_model']}, "
            f"{cfg['n_layers']} layers, {cfg['n_heads']} heads, FFN {cfg['d_ff']}, block {cfg['block']}, "
            f"batch {cfg['batch']}, fp32; {cfg['rounds']} rounds x {cfg['steps_per_round']} steps after "
            f"{cfg['warmup_steps']} warm-up steps; 1-min load per round {res['load_1min_per_round']}.\n"
            f"fp32 matmul peak (n={cfg['peak_n']}): "
            f"{min(peaks) / 1e9:.1f} / {statistics.median(peaks) / 1e9:.1f} / {max(peaks) / 1e9:.1f} "
            f"GFLOP/s (min/median/max over rounds; MFU divides by the max)\n")
    rows = [[n, c["what"], c["dropout"], c["tokens_per_s_min"], c["tokens_per_s_median"], c["tokens_per_s_max"],
             1000 * c["step_s_median"], c["useful_flops_per_step"] / 1e9, f"{100 * c['useful_mfu']:.1f}%",
             f"{100 * c['useful_mfu_best']:.1f}%", f"{100 * c['executed_mfu']:.1f}%"]
            for n, c in res["contenders"].items()]
    t1 = markdown(["contender", "model", "dropout", "tok/s min", "tok/s median", "tok/s max", "ms/step median",
                   "useful GFLOP/step", "useful MFU median", "useful MFU best", "executed MFU median"], rows)
    verdict = {True: "yes", False: "NO", None: "-"}
    rows = [[f"{c['a']} / {c['b']}", "tok/s ratio" if c["how"] == "speedup" else "step-time ratio",
             ", ".join(f"{x:.2f}" for x in c["per_round"]), c["median"], c["best"], c["target"] or "-",
             f"{verdict[c['meets_median']]} / {verdict[c['meets_best']]}"] for c in res["comparisons"]]
    rows += [[n, "useful MFU", ", ".join(f"{x:.2f}" for x in c["useful_mfu_per_round"]), c["useful_mfu"],
              c["useful_mfu_best"], c["target"], f"{verdict[c['meets_median']]} / {verdict[c['meets_best']]}"]
             for n, c in res["contenders"].items() if c["target"]]
    t2 = markdown(["comparison", "metric", "per round", "median", "best vs best", "target",
                   "met (median / best)"], rows)
    return f"{head}\n{t1}\n\n{t2}\n"


PROFILE_GROUPS = {  # op-name fragments -> group, first match wins
    "matmul (mm/addmm/bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention (SDPA kernels)": ("scaled_dot_product", "flash_attention"),
    "softmax + cross-entropy": ("log_softmax", "nll_loss", "aten::_softmax", "cross_entropy"),
    "layer norm": ("layer_norm",),
    "gelu": ("gelu",),
}


def profile(size_name: str, name: str, threads: int, rows: int = 20) -> str:
    """Where two steps of one contender spend their time (self CPU time), after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile as prof

    torch.set_num_threads(threads)
    (c,) = build_contenders(SIZES[size_name], threads, [name])
    c.step()
    start = time.perf_counter()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        c.step()
        c.step()
    wall = time.perf_counter() - start
    events = p.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = dict.fromkeys([*PROFILE_GROUPS, "optimizer step (AdamW, inclusive)", "everything else"], 0.0)
    adam = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    for e in events:
        group = next((g for g, keys in PROFILE_GROUPS.items() if any(k in e.key for k in keys)), None)
        groups[group or "everything else"] += e.self_cpu_time_total
    groups["optimizer step (AdamW, inclusive)"] = adam
    groups["everything else"] -= adam  # AdamW's elementwise ops were counted there
    summary = markdown(["group", "ms per step", "share"],
                       [[g, t / 2e3, f"{100 * t / total:.1f}%"] for g, t in groups.items()])
    return (f"{name}: 2 profiled steps, {wall:.2f} s wall, load {load_average()}\n\n{summary}\n\n"
            + events.table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="reference")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1, help="steps per contender per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", help="run only these contenders")
    ap.add_argument("--profile", metavar="CONTENDER", help="print a torch.profiler table instead")
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    if args.profile:
        print(profile(args.size, args.profile, args.threads))
        return None
    res = run(args.size, args.rounds, args.steps, args.warmup, args.threads, args.only)
    print(report(res))
    write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
