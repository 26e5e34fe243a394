"""Write the report's tables as CSV (and Parquet when pyarrow is installed) for further analysis."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from objbench.reports.load import NO_LAYER


def restore_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn the loader's stand-ins for 'no layer / no group' back into real nulls."""
    out = frame.copy()
    if "layer" in out:
        out["layer"] = out["layer"].astype("Int64").mask(out["layer"] == NO_LAYER)
    for column in ("split", "pooling", "group"):
        if column in out:
            out[column] = out[column].mask(out[column] == "")
    return out


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    """`<name>.csv` for each table; `results.parquet` too when pyarrow can be imported."""
    written = {}
    for name, frame in tables.items():
        path = out_dir / f"{name}.csv"
        restore_nulls(frame).to_csv(path, index=False)
        written[path.name] = path
    if "results" in tables and importlib.util.find_spec("pyarrow") is not None:
        path = out_dir / "results.parquet"
        restore_nulls(tables["results"]).to_parquet(path, index=False)
        written[path.name] = path
    return written
