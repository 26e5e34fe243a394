"""What every bench result carries: the machine, the versions, the load, and a Markdown table.

Numbers from a shared machine mean little without the load average next to them, so each
measurement records it before and after.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("objbench", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(*packages: str) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions(*packages),
        "load_average_before": load_average(),
    }


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` calls, in seconds (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(n: int, dtype: torch.dtype = torch.float32, device: str = "cpu", repeat: int = 3) -> float:
    """Achieved FLOP/s of an ``n x n`` matmul: the practical peak MFU is measured against."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    out = torch.empty(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def mm() -> None:
        torch.mm(a, b, out=out)
        sync()

    mm()  # warm-up: allocation, kernel selection
    return 2.0 * n**3 / best_time(mm, repeat)


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:,.3g}" if isinstance(v, float) and abs(v) < 1000 else (
            f"{v:,.0f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | Path | None, result: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
