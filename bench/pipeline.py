"""Everything around the training step: tokenization, start-up, memory, reading a trained run.

* tokenization: ``blocks.pack`` (the run's tokenizer, batched ``encode_batch``) over the
  corpus's training split, in tokens/s, best and median of ``--repeats``;
* start-up: wall time from launching ``python -m objbench train`` (what the ``objbench``
  script runs) to the moment its metrics.jsonl holds the step-1 line, on a warm cache (the
  bench prepares the data in-process first). This includes interpreter start, imports, data
  loading, model build and the step-0 validation loss, as a user waits for them;
* memory: peak RSS of that training process (``os.wait4``), whole run;
* reading: ``TrainedModel.sentence_features`` (all layers, pooled) and ``TrainedModel.score``
  (mlm: pseudo-log-likelihood, one masked copy per token) on validation sentences of the run
  just trained, in sentences/s;
* probes: one layer's POS probe (the task's default training sentences, C = 1, 200 L-BFGS
  iterations) fit by scikit-learn and by `TorchLogistic` on the CPU, in seconds: which
  backend is the faster CPU default.

    python bench/pipeline.py [--size reference|tiny] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from objbench.bench.common import load_average, markdown, provenance, write_json
from objbench.harness.blocks import pack
from objbench.harness.config import RunConfig, apply_overrides, validate
from objbench.harness.corpora import load_corpus
from objbench.harness.data import prepare_data
from objbench.harness.reading import TrainedModel
from objbench.tasks import probe_data
from objbench.tasks.builtin import POSOptions, subsets
from objbench.tasks.logistic import TorchLogistic

SETTINGS = {
    # the default run config (news, d_model 128, 2 layers, batch 32 x 128 tokens), cut short
    "reference": dict(docs=None, runs=3, sentences=256, train=["budget.steps=10", "train.eval_points=1"]),
    "tiny": dict(docs=100, runs=1, sentences=12, train=[
        "data.corpus=ptb",
        "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64", "model.max_len=160",
        "data.vocab_size=1000", "data.block_size=32", "data.val_blocks=8", "train.batch_size=8",
        "budget.steps=2", "train.eval_points=1"]),
}


def tokenization(cfg: RunConfig, docs: int | None, repeats: int) -> dict[str, Any]:
    data = prepare_data(cfg.data)  # the run's own tokenizer, trained or loaded from the cache
    train = load_corpus(cfg.data.corpus, validation_fraction=cfg.data.validation_fraction)["train"]
    if docs:
        train = train.select(range(min(docs, len(train))))
    chars = sum(len(t) for t in train["text"])
    seconds, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        blocks = pack(train, data.tokenizer, cfg.data.block_size, data.vocab["[SEP]"])
        seconds.append(time.perf_counter() - start)
        tokens = blocks.size
    return {"corpus": cfg.data.corpus, "documents": len(train), "characters": chars, "tokens": tokens,
            "seconds": seconds, "tokens_per_s_best": tokens / min(seconds),
            "tokens_per_s_median": tokens / statistics.median(seconds),
            "mb_per_s_best": chars / 1e6 / min(seconds)}


def train_once(overrides: list[str], out: Path, threads: int) -> dict[str, Any]:
    """Launch ``objbench train``; time to the step-1 metrics line, total time, peak RSS."""
    cmd = [sys.executable, "-m", "objbench", "train", "mlm", "--out", str(out),
           *(a for o in [*overrides, f"train.threads={threads}"] for a in ("--set", o))]
    metrics = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.stderr", "w+") as err:  # a file: a full pipe would block the run
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        first = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # not poll(): wait4 keeps the rusage
            if pid:
                break
            if first is None and metrics.exists() and any(
                    line.endswith("}") and json.loads(line).get("step") == 1
                    for line in metrics.read_text().splitlines()):
                first = time.perf_counter() - start
            time.sleep(0.01)
        total = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        if proc.returncode != 0 or first is None:
            raise RuntimeError(f"objbench train failed or logged no step 1 ({' '.join(cmd)}):\n"
                               f"{err.read()[-2000:]}")
    return {"first_step_s": first, "total_s": total, "peak_rss_mib": usage.ru_maxrss / 1024}  # KiB on Linux


STARTUP_PARTS = """
import time
t0 = time.perf_counter()
import torch, objbench.harness.trainer, objbench.harness.cli
t1 = time.perf_counter()
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # the first optimizer imports torch._dynamo
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def startup_parts() -> dict[str, float]:
    """Two fixed costs inside the start-up: imports, and torch's first optimizer construction."""
    out = subprocess.run([sys.executable, "-c", STARTUP_PARTS], capture_output=True, text=True, check=True)
    imports, optimizer = map(float, out.stdout.split())
    return {"imports_s": imports, "first_optimizer_s": optimizer}


def sentences_of(cfg: RunConfig, n: int) -> list[str]:
    """Validation sentences of 5 to 40 words: what probe tasks feed the reader."""
    val = load_corpus(cfg.data.corpus, validation_fraction=cfg.data.validation_fraction)["validation"]
    out = []
    for text in val["text"]:
        for s in re.split(r"(?<=[.!?])\s+", text):
            if 5 <= len(s.split()) <= 40:
                out.append(s.strip())
                if len(out) == n:
                    return out
    return out


def reading(run: Path, sentences: list[str], repeats: int) -> dict[str, Any]:
    model = TrainedModel(run, device="cpu")
    n_tokens = sum(len(model.ids(s)) for s in sentences)
    out: dict[str, Any] = {"sentences": len(sentences), "tokens": n_tokens,
                           "score_method": model.objective.score_method}
    for name, fn in (("features", lambda: model.sentence_features(sentences)),
                     ("score", lambda: model.score(sentences))):
        fn()  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        out[name] = {"seconds": seconds, "sentences_per_s_best": len(sentences) / min(seconds),
                     "sentences_per_s_median": len(sentences) / statistics.median(seconds),
                     "tokens_per_s_best": n_tokens / min(seconds)}
    return out


def probe_fits(run: Path, repeats: int) -> dict[str, Any]:
    """Seconds to fit the last layer's POS probe with scikit-learn and with torch, on CPU."""
    model = TrainedModel(run, device="cpu")
    train = subsets(probe_data.load_pos(), POSOptions().caps())[0]["train"]
    read = model.word_features(list(train["words"]), layers=[model.cfg.model.n_layers])
    x = np.concatenate([r.features[:, 0] for r in read])
    y = np.array([t for tags, r in zip(train["tags"], read) for t in r.align(tags)])
    sklearn = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))  # C = 1
    fits = {"scikit-learn": lambda: sklearn.fit(x, y),
            "torch": lambda: TorchLogistic(1.0, 200, "cpu").fit(x, y)}
    out: dict[str, Any] = {"words": len(y), "features": x.shape[1], "classes": len(set(y))}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, fit in fits.items():
            fit()  # warm-up
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                fit()
                seconds.append(time.perf_counter() - start)
            out[name] = {"seconds": seconds, "best_s": min(seconds), "median_s": statistics.median(seconds)}
        out["agreement"] = float((fits["torch"]().predict(x) == fits["scikit-learn"]().predict(x)).mean())
    return out


def run(size: str, threads: int, workdir: Path) -> dict[str, Any]:
    torch.set_num_threads(threads)
    s = SETTINGS[size]
    info = provenance()
    cfg = validate(RunConfig, apply_overrides({"objective": "mlm"}, s["train"]))
    res: dict[str, Any] = {**info, "size": size, "threads": threads, "train_overrides": s["train"]}
    res["tokenization"] = tokenization(cfg, s["docs"], max(s["runs"], 2))
    prepare_data(cfg.data, cfg.train.batch_size)  # warm cache: blocks for this block size too
    runs = [train_once(s["train"], workdir / f"run{k}", threads) for k in range(s["runs"])]
    res["startup"] = {"runs": runs, "first_step_s_min": min(r["first_step_s"] for r in runs),
                      "first_step_s_median": statistics.median(r["first_step_s"] for r in runs),
                      "target_s": 5.0, "parts": startup_parts()}
    res["memory"] = {"peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs)}
    res["reading"] = reading(workdir / "run0", sentences_of(cfg, s["sentences"]), max(s["runs"], 1))
    res["probes"] = probe_fits(workdir / "run0", max(s["runs"], 2))
    res["load_average_after"] = load_average()
    return res


def report(res: dict[str, Any]) -> str:
    t, st, rd = res["tokenization"], res["startup"], res["reading"]
    rows = [
        ["tokenize + pack", f"{t['corpus']}: {t['documents']} docs, {t['tokens']:,} tokens",
         f"{t['tokens_per_s_best']:,.0f} tok/s ({t['mb_per_s_best']:.2f} MB text/s)",
         f"median {t['tokens_per_s_median']:,.0f} tok/s"],
        ["`objbench train` start to first step", "warm cache, incl. step-0 val loss",
         f"{st['first_step_s_min']:.2f} s (min)",
         f"median {st['first_step_s_median']:.2f} s; target < 5 s; of which imports "
         f"{st['parts']['imports_s']:.2f} s, torch's first AdamW() {st['parts']['first_optimizer_s']:.2f} s"],
        ["peak RSS of the run", " ".join(res["train_overrides"]), f"{res['memory']['peak_rss_mib_max']:.0f} MiB", ""],
    ]
    for name, what in (("features", "sentence_features, all layers"), ("score", rd["score_method"])):
        r = rd[name]
        rows.append([f"TrainedModel.{'sentence_features' if name == 'features' else 'score'}",
                     f"{rd['sentences']} sentences, {rd['tokens']} tokens; {what}",
                     f"{r['sentences_per_s_best']:,.1f} sent/s", f"{r['tokens_per_s_best']:,.0f} tok/s"])
    pr = res["probes"]
    rows.append(["POS probe fit, one layer", f"{pr['words']:,} words x {pr['features']} features, "
                 f"{pr['classes']} tags; C 1, 200 iterations",
                 f"scikit-learn {pr['scikit-learn']['best_s']:.3f} s, torch {pr['torch']['best_s']:.3f} s",
                 f"same prediction on {pr['agreement']:.1%} of words"])
    head = (f"{res['date']} | {res['cpu']} | {res['threads']} threads | torch {res['versions']['torch']} | "
            f"load {res['load_average_before']} -> {res['load_average_after']}\n")
    return head + "\n" + markdown(["what", "on", "best", "also"], rows) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SETTINGS), default="reference")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="objbench-pipeline-") as tmp:
        res = run(args.size, args.threads, Path(tmp))
    print(report(res))
    write_json(args.out, res)
    return res


if __name__ == "__main__":
    main()
