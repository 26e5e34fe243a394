"""The `objbench` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from objbench.harness import progress
from objbench.harness.errors import Interrupted, ObjbenchError


def _train(args: argparse.Namespace) -> None:
    from objbench.harness.config import RunConfig, apply_overrides, load_yaml, validate
    from objbench.harness.output import output_folder
    from objbench.harness.trainer import Trainer, checked

    data = load_yaml(Path(args.config)) if args.config else {}
    data["objective"] = args.objective
    cfg = checked(validate(RunConfig, apply_overrides(data, args.set), where="run config"))
    final = Trainer(cfg, output_folder(Path(args.out))).run()  # both checked before any data
    print(f"trained {cfg.objective} into {args.out}; final checkpoint {final}")


def _list(registry_name: str) -> None:
    from objbench.harness import registry

    reg = getattr(registry, registry_name)
    rows = reg.describe()
    width = max((len(n) for n, _ in rows), default=0)
    for name, doc in rows:
        print(f"{name:<{width}}  {doc}")


def _probe(args: argparse.Namespace) -> None:
    from objbench.tasks.runner import probe_run

    probe_run(Path(args.run_dir), args.task, options=args.set)


def _check_objective(args: argparse.Namespace) -> None:
    from objbench.harness.config import apply_overrides
    from objbench.harness.errors import ConfigError
    from objbench.objectives.contract import check_objective

    stray = [s for s in args.set if not s.startswith("options.")]
    if stray:
        raise ConfigError(f"--set {stray[0]!r}: check-objective takes the objective's options only "
                          f"(options.KEY=VALUE, e.g. options.mask_rate=0.3)")
    results = check_objective(args.objective, apply_overrides({}, args.set).get("options", {}))
    for check in results:
        print(check.line())
    failed = [c.name for c in results if not c.passed]
    print(f"{args.objective}: {len(results) - len(failed)} of {len(results)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


def _score(args: argparse.Namespace) -> None:
    import torch

    from objbench.harness.reading import TrainedModel
    from objbench.harness.surprisal import (format_table, read_sentences, score_sentences, scoring_statement,
                                            write_jsonl)

    sentences = read_sentences(args.text, Path(args.file) if args.file else None)  # before loading the run
    model = TrainedModel(Path(args.run_dir))
    if model.cfg.train.threads:  # the run's CPU thread setting applies to reading it too
        torch.set_num_threads(model.cfg.train.threads)
    statement = scoring_statement(model, args.variant)
    scored = score_sentences(model, sentences, args.variant)
    if args.out:
        write_jsonl(scored, Path(args.out), statement)
        print(f"{len(scored)} sentences -> {args.out} ({statement})")
    else:
        print(f"{statement}\n\n{format_table(scored)}")


def _study(args: argparse.Namespace) -> None:
    from objbench.harness.study import load_study, run_study

    study = load_study(Path(args.study))
    if args.action == "validate":
        counts = [(len(study.arms), "arm"), (len(study.data_caps), "data cap"), (len(study.seeds), "seed")]
        sizes = " x ".join(f"{n} {what}{'s' * (n != 1)}" for n, what in counts if n)
        print(f"{args.study}: valid ({sizes}: {len(study.run_configs())} runs)")
        return
    ok = run_study(study, Path(args.out) if args.out else None, shard=args.shard)
    if not ok:
        sys.exit(1)


def _report(args: argparse.Namespace) -> None:
    from objbench.reports import build_report

    reference = Path(args.reference) if args.reference else None
    for name, path in build_report(Path(args.study_dir), reference=reference).items():
        print(f"{name}: {path}")


def _export(args: argparse.Namespace) -> None:
    from objbench.harness.export import export_run

    out = export_run(Path(args.run_dir), Path(args.out), args.checkpoint)
    print(f"exported {args.run_dir} to {out}: load it with trust_remote_code=True ({out / 'README.md'})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objbench", description=__doc__)
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error or Ctrl-C instead of one line")
    p.add_argument("--quiet", action="store_true",
                   help="print only results and errors: no progress bars or progress lines")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("objectives", help="list registered objectives")
    sub.add_parser("tasks", help="list registered probe tasks")

    t = sub.add_parser("train", help="train one objective")
    t.add_argument("objective")
    t.add_argument("--out", required=True, help="run folder (resumed if it holds a checkpoint)")
    t.add_argument("--config", help="YAML file with run settings")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. budget.tokens=200000 or options.mask_rate=0.3")

    c = sub.add_parser("check-objective", help="run the objective contract (shapes, determinism, leakage, "
                       "scoring, loss gradients, FLOPs, checkpoints, reading) on a registered objective")
    c.add_argument("objective")
    c.add_argument("--set", action="append", default=[], metavar="options.KEY=VALUE",
                   help="an option of the objective, e.g. options.mask_rate=0.3")

    pr = sub.add_parser("probe", help="evaluate a trained run on probe tasks")
    pr.add_argument("run_dir")
    pr.add_argument("--task", action="append", required=True, help="task name (repeatable)")
    pr.add_argument("--set", action="append", default=[], metavar="TASK.KEY=VALUE")

    sc = sub.add_parser("score", help="per-token and per-word log-probabilities of sentences under a run's "
                                      "own scoring")
    sc.add_argument("run_dir")
    source = sc.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a sentence (repeatable)")
    source.add_argument("--file", help="a UTF-8 text file, one sentence per line (blank lines skipped)")
    sc.add_argument("--variant", help="one of the objective's score variants (e.g. pll-word-l2r)")
    sc.add_argument("--out", help="write JSON Lines here (one object per sentence) instead of printing")

    s = sub.add_parser("study", help="run or validate a study file")
    s.add_argument("action", choices=["run", "validate"])
    s.add_argument("study")
    s.add_argument("--out", help="study folder (default runs/<study name>)")
    s.add_argument("--shard", help="i/n: run only the i-th of n deterministic shards of (arm, seed)")

    r = sub.add_parser("report", help="rebuild a study's report from its result rows")
    r.add_argument("study_dir")
    r.add_argument("--reference", metavar="DIR", help="also write a copy to keep under version control "
                   "there: report.md without figures, summary/comparisons/verdict CSVs")

    e = sub.add_parser("export", help="write a run as a folder transformers loads (trust_remote_code)")
    e.add_argument("run_dir")
    e.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier export)")
    e.add_argument("--checkpoint", type=int, metavar="STEP", help="the checkpoint at this step "
                   "(default: the newest)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one command. Errors objbench can explain print one line and exit 2, Ctrl-C prints
    where it stopped and exits 130; ``--debug`` shows their tracebacks instead. Anything else
    is a bug and keeps its traceback."""
    args = parser().parse_args(argv)
    progress.configure(quiet=args.quiet)
    try:
        _init_distributed()
        if args.command in ("objectives", "tasks"):
            _list(args.command.upper())
        else:
            {"train": _train, "probe": _probe, "score": _score, "study": _study, "report": _report,
             "export": _export, "check-objective": _check_objective}[args.command](args)
    except ObjbenchError as exc:
        if args.debug:
            raise
        _last_line(f"objbench: error: {exc}")
        sys.exit(2)
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        where = f" {exc}" if isinstance(exc, Interrupted) else ""
        _last_line(f"objbench: interrupted{where}; rerun the same command to resume")
        sys.exit(130)


def _last_line(text: str) -> None:
    """Print the command's last line on stderr on a line of its own: progress bars the failed
    work left open are closed first (tqdm tracks every open bar in ``_instances``)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(text, file=sys.stderr)


def _init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
