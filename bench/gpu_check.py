"""GPU check: bf16 correctness, the leakage contract on the device, and BERT-base throughput.

Three parts, all through objbench's own ``Trainer``/``Encoder`` and self-contained data (no
corpus, no internet):

1. bf16 autocast tracks fp32: two runs from the same initial weights on the same batches
   (TF32 off for both), ``--track-steps`` steps; every step's loss must agree within
   ``LOSS_TOL`` (relative), and the fp32 loss must have fallen so the check means something.
   The tokens follow a random sparse bigram chain, so there is something to learn.
2. Leakage contract on the device: for every registered objective, perturb each clean token
   in turn (the objective's random draws held fixed) and record which outputs of every kind
   of target move (`objbench.objectives.contract.measured_visibility`), with the encoder and
   the objective's modules on the device in fp32 (TF32 off); no output may depend on a token
   the objective declares unseen, nor on its own token (unless it declares so). Whether every
   declared dependence is measured is shown too, not required: it is a property of the
   objective (checked exactly in fp64 by ``objbench check-objective``), and fp32 cannot
   resolve the weakest ones (ELECTRA's binary head moves by ~1e-7 for some tokens).
3. Throughput: tokens/s and MFU against a bf16 matmul peak measured in the same run, for
   mlm, clm and masked-ar at BERT-base size, bf16 autocast, TF32, fused AdamW; eager, or
   ``torch.compile`` with ``--compile`` (more warm-up steps: masked-ar's lengths vary, so the
   first steps recompile with dynamic shapes).

``--device cpu --tiny`` runs all three at a tiny size on the CPU: a dry run that keeps this
script working where no GPU is available (the tests run it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from objbench.bench.common import markdown, matmul_peak, provenance, write_json
from objbench.harness.config import BudgetConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from objbench.harness.data import PreparedData
from objbench.harness.registry import OBJECTIVES
from objbench.harness.trainer import Trainer
from objbench.objectives import contract
from objbench.objectives.base import Vocab, special_tokens

LOSS_TOL = 0.02  # |bf16 - fp32| / fp32 loss, per step: bf16 keeps ~3 significant digits
MIN_FALL = 0.05  # the fp32 clm loss must fall this much, or tracking it proves little (mlm
#                 learns too slowly in 20 steps to ask it of mlm; its tracking is checked all the same)
MOVED = 1e-4  # a logit "moves" above this (fp32 noise on a fixed input is ~1e-7 or exactly 0)
SPECIALS = special_tokens([s for n in OBJECTIVES.names() for s in OBJECTIVES.get(n).special_tokens])

SIZES = {  # lr only matters for the bf16 tracking runs
    "bert-base": dict(vocab=30522, d_model=768, n_layers=12, n_heads=12, d_ff=3072, block=512, batch=32, lr=1e-3),
    "track": dict(vocab=1024, d_model=256, n_layers=4, n_heads=4, d_ff=1024, block=128, batch=32, lr=1e-3),
    "tiny": dict(vocab=128, d_model=32, n_layers=2, n_heads=2, d_ff=64, block=16, batch=4, lr=3e-3),
}


def vocab_of(size: int) -> Vocab:
    return Vocab(size, {s: i for i, s in enumerate(SPECIALS)}, torch.ones(size, dtype=torch.bool))


def bigram_blocks(vocab: int, n: int, block: int, seed: int = 0) -> np.ndarray:
    """Token blocks from a random chain where each token has 4 likely successors: learnable."""
    rng = np.random.default_rng(seed)
    lo = len(SPECIALS)
    succ = rng.integers(lo, vocab, (vocab, 4))
    out = np.empty((n, block), dtype=np.uint16)
    out[:, 0] = rng.integers(lo, vocab, n)
    choice = rng.integers(0, 4, (n, block))
    for t in range(1, block):
        out[:, t] = succ[out[:, t - 1], choice[:, t]]
    return out


def data_of(vocab: int, blocks: np.ndarray) -> PreparedData:
    return PreparedData(tokenizer=None, tokenizer_path=Path(os.devnull), vocab=vocab_of(vocab), train=blocks,
                        validation=blocks[:8], corpus_hash="synthetic", tokenizer_hash="synthetic")


def run_config(size: dict, objective: str, device: str, precision: str, compile_: bool = False,
               options: dict | None = None) -> RunConfig:
    return RunConfig(
        objective=objective, options=options or {},
        model=ModelConfig(d_model=size["d_model"], n_layers=size["n_layers"], n_heads=size["n_heads"],
                          d_ff=size["d_ff"], max_len=2 * size["block"] + 2),
        data=DataConfig(vocab_size=size["vocab"], block_size=size["block"]),
        train=TrainConfig(batch_size=size["batch"], device=device, precision=precision, compile=compile_,
                          lr=size["lr"], warmup=0.0, schedule="constant"),
        budget=BudgetConfig(steps=10**9),  # never reached
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- 1. bf16 tracks fp32 ------------------------------------------------------------------
def check_bf16(size: dict, device: str, steps: int) -> dict[str, Any]:
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference is true fp32
    torch.backends.cudnn.allow_tf32 = False
    data = data_of(size["vocab"], bigram_blocks(size["vocab"], 16 * size["batch"], size["block"]))
    out: dict[str, Any] = {"tolerance_rel": LOSS_TOL, "clm_min_fall": MIN_FALL, "size": size, "steps": steps,
                           "objectives": {}}
    for objective in ("mlm", "clm"):
        losses = {}
        for precision in ("fp32", "bf16"):
            t = Trainer(run_config(size, objective, device, precision), Path(os.devnull), data=data, progress=False)
            losses[precision] = [t.train_step()["loss"] for _ in range(steps)]
        rel = [abs(b - a) / a for a, b in zip(losses["fp32"], losses["bf16"], strict=True)]
        fell = losses["fp32"][-1] < (1 - MIN_FALL) * losses["fp32"][0] if objective == "clm" else None
        out["objectives"][objective] = {**losses, "max_rel_diff": max(rel), "fp32_fell": fell,
                                        "ok": max(rel) <= LOSS_TOL and fell is not False}
    out["ok"] = all(o["ok"] for o in out["objectives"].values())
    return out


# -- 2. leakage contract on the device ------------------------------------------------------
def check_leakage(device: str) -> dict[str, Any]:
    torch.backends.cuda.matmul.allow_tf32 = False
    T = contract.BLOCK
    out: dict[str, Any] = {"threshold": MOVED, "objectives": {}}
    for name in OBJECTIVES.names():
        obj = contract.build(name)
        encoder, modules = (m.float().to(device) for m in contract.tiny_models(obj))
        blocks = contract.random_blocks(obj, 3, T, seed=2)
        m = contract.measured_visibility(obj, blocks, 3, encoder, modules, device, threshold=MOVED)
        with torch.no_grad():  # the same input twice: how much the device's own noise moves outputs
            again = obj.predictions(encoder, modules, m.batch.to(device))
        noise = max(float((a.values.cpu() - p.values).abs().max()) if len(p.values) else 0.0
                    for a, p in zip(again, m.predictions))
        declared = obj.visibility(m.batch, T)
        as_declared = all(torch.equal(seen, declared[p.where]) for p, seen in zip(m.predictions, m.seen))
        leak_free = all(not (seen & ~declared[p.where]).any() for p, seen in zip(m.predictions, m.seen))
        own = [seen[p.target_source >= 0, p.target_source[p.target_source >= 0]]
               for p, seen in zip(m.predictions, m.seen)]
        sees_self = [bool(o.any()) for o in own]  # per kind of target (a composite's components differ)
        allowed = all(obj.sees_own_target or p.sees_own_target or not seen for p, seen in zip(m.predictions, sees_self))
        ok = leak_free and noise < MOVED and allowed
        out["objectives"][name] = {"leak_free": leak_free, "as_declared": as_declared, "sees_own_target": any(sees_self),
                                   "rerun_noise": noise, "ok": ok}
    out["ok"] = all(o["ok"] for o in out["objectives"].values())
    return out


# -- 3. throughput ----------------------------------------------------------------------------
ARMS = [("mlm", {}), ("clm", {}), ("masked-ar", {"r": 0.15}), ("masked-ar", {"r": 1.0})]


def throughput(size: dict, device: str, compile_: bool, steps: int, warmup: int, peak_n: int) -> dict[str, Any]:
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (optimizer, norms) on tensor cores
    torch.backends.cudnn.allow_tf32 = True
    peak = matmul_peak(peak_n, torch.bfloat16, device, repeat=10 if device == "cuda" else 2)
    data = data_of(size["vocab"], bigram_blocks(size["vocab"], 4 * size["batch"], size["block"]))
    rows = {}
    for objective, options in ARMS:
        name = objective + "".join(f" r={v}" for v in options.values())
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = Trainer(run_config(size, objective, device, "bf16", compile_, options), Path(os.devnull),
                    data=data, progress=False)
        start = time.perf_counter()
        for _ in range(warmup):
            t.train_step()
        sync(device)
        warm_s = time.perf_counter() - start
        flops0 = t.counters.flops
        start = time.perf_counter()
        for _ in range(steps):
            t.train_step()
        sync(device)
        seconds = time.perf_counter() - start
        useful = (t.counters.flops - flops0) / steps
        rows[name] = {"tokens_per_s": steps * size["batch"] * size["block"] / seconds,
                      "step_ms": 1000 * seconds / steps, "useful_flops_per_step": useful,
                      "useful_mfu": useful * steps / seconds / peak, "warmup_s": warm_s,
                      "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
        del t
    return {"bf16_peak_flops": peak, "peak_n": peak_n, "compile": compile_, "fused_adamw": True,
            "tf32": True, "steps": steps, "warmup": warmup, "arms": rows}


def report(res: dict[str, Any]) -> str:
    lines = [f"{res['date']} | {res['device_name']} | torch {res['versions']['torch']}"]
    if "bf16" in res:
        b = res["bf16"]
        rows = [[o, v["fp32"][0], v["fp32"][-1], v["bf16"][-1], v["max_rel_diff"],
                 "-" if v["fp32_fell"] is None else v["fp32_fell"],
                 "ok" if v["ok"] else "FAIL"] for o, v in b["objectives"].items()]
        lines += [f"\n1. bf16 autocast vs fp32, {b['steps']} steps, same init and batches, vocab "
                  f"{b['size']['vocab']}, d {b['size']['d_model']}, {b['size']['n_layers']} layers "
                  f"(tolerance {b['tolerance_rel']:.0%} relative per step; fp32 clm must fall {b['clm_min_fall']:.0%})",
                  markdown(["objective", "fp32 first", "fp32 last", "bf16 last", "max rel diff",
                            "fp32 fell enough", "verdict"], rows)]
    if "leakage" in res:
        rows = [[o, v["leak_free"], v["as_declared"], v["sees_own_target"], v["rerun_noise"],
                 "ok" if v["ok"] else "FAIL"] for o, v in res["leakage"]["objectives"].items()]
        lines += ["\n2. leakage contract with the encoder on the device (fp32, TF32 off)",
                  markdown(["objective", "no leak", "as declared", "a target sees itself", "rerun noise", "verdict"],
                           rows)]
    if "throughput" in res:
        t = res["throughput"]
        rows = [[n, a["tokens_per_s"], a["step_ms"], a["useful_flops_per_step"] / 1e12,
                 f"{100 * a['useful_mfu']:.1f}%", a["warmup_s"], a["peak_mem_gib"] or "-"]
                for n, a in t["arms"].items()]
        lines += [f"\n3. throughput{' (torch.compile)' if t['compile'] else ''}: {res['size']}, bf16 "
                  f"autocast, TF32, fused AdamW {t['fused_adamw']}; bf16 matmul peak "
                  f"(n={t['peak_n']}) {t['bf16_peak_flops'] / 1e12:.1f} TFLOP/s",
                  markdown(["objective", "tok/s", "ms/step", "useful TFLOP/step", "useful MFU",
                            "warm-up s", "peak GiB"], rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes everywhere (the CPU dry run)")
    ap.add_argument("--batch", type=int, help="throughput batch (default 32 at BERT-base size)")
    ap.add_argument("--track-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10, help="timed throughput steps per objective")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="time with torch.compile instead of eager")
    ap.add_argument("--only", choices=["correctness", "throughput"], help="run one half")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False); "
              "run on a machine with an NVIDIA GPU, or use --device cpu --tiny for a dry run",
              file=sys.stderr)
        return 3
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_size = dict(SIZES["tiny" if args.tiny else "bert-base"])
    if args.batch:
        bench_size["batch"] = args.batch
    res: dict[str, Any] = {**provenance(), "size": "tiny" if args.tiny else "bert-base", "config": bench_size,
                           "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    if args.only != "throughput":
        res["bf16"] = check_bf16(SIZES["tiny" if args.tiny else "track"], args.device, args.track_steps)
        res["leakage"] = check_leakage(args.device)
    if args.only != "correctness":
        peak_n = 256 if args.tiny else 8192
        warmup = max(args.warmup, 6) if args.compile else args.warmup
        res["throughput"] = throughput(bench_size, args.device, args.compile, args.steps, warmup, peak_n)
    print(report(res))
    write_json(args.out, res)
    ok = res.get("bf16", {"ok": True})["ok"] and res.get("leakage", {"ok": True})["ok"]
    print("\ngpu_check: correctness", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
