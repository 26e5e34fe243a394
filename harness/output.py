"""Output folders, checked before any data is prepared or any file is written into them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from objbench.harness.errors import ConfigError


def output_folder(path: Path) -> Path:
    """``path`` as a folder objbench can write into, created if missing; else a ConfigError.

    Writing a probe file is the test, not permission bits: it also catches read-only mounts
    and runs as root, for whom the bits do not apply.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output folder {path} is an existing file; choose a folder (--out)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write into output folder {path} ({exc.strerror or exc}); "
                          f"choose a writable folder (--out)") from None
    return path
