"""Cache entries: built once, hashed in full once per process, rebuilt when damaged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from objbench.harness import integrity
from objbench.harness.integrity import cached_entry, mismatches, record


class Builder:
    """Writes a folder entry of two files and counts how often it was asked to."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> None:
        self.calls += 1
        (path / "part").mkdir(parents=True)
        (path / "a.bin").write_bytes(bytes(range(256)) * 16)
        (path / "part" / "b.txt").write_text("clean")


def hashes_counted(monkeypatch) -> list[Path]:
    seen: list[Path] = []
    real = integrity.file_digest
    monkeypatch.setattr(integrity, "file_digest", lambda path: seen.append(path) or real(path))
    return seen


def test_entry_is_hashed_once_per_process_and_rebuilt_when_damaged(tmp_path, monkeypatch, capsys):
    build, entry = Builder(), tmp_path / "cache" / "entry"
    assert cached_entry(entry, build) == entry and build.calls == 1
    manifest = json.loads(Path(f"{entry}.manifest.json").read_text())
    assert manifest == record(tmp_path / "cache", [entry / "a.bin", entry / "part" / "b.txt"])

    hashed = hashes_counted(monkeypatch)
    monkeypatch.setattr(integrity, "_verified", {})  # as in a new process
    cached_entry(entry, build)
    cached_entry(entry, build)
    assert build.calls == 1 and len(hashed) == 2  # each file once, then the memo

    damaged = entry / "part" / "b.txt"
    damaged.write_text("dirty")  # same size: only the hash tells
    # file times tick in milliseconds or coarser: date the edit a second on, as any edit made
    # after the last check is (the memo keys on size and modification/change times)
    st = damaged.stat()
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    cached_entry(entry, build)
    assert build.calls == 2 and (entry / "part" / "b.txt").read_text() == "clean"
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]
    assert capsys.readouterr().err.strip() == (
        f"objbench: warning: cache entry {entry} is damaged: entry/part/b.txt has sha256 "
        f"{sha('dirty')}..., expected {sha('clean')}...; rebuilding it")


def test_damage_is_named_file_by_file(tmp_path):
    build = Builder()
    build(tmp_path / "e")
    manifest = record(tmp_path, [tmp_path / "e" / "a.bin", tmp_path / "e" / "part" / "b.txt"])
    (tmp_path / "e" / "a.bin").write_bytes(b"short")
    (tmp_path / "e" / "part" / "b.txt").unlink()
    assert mismatches(tmp_path, manifest) == ["e/a.bin has 5 bytes, expected 4,096",
                                              "e/part/b.txt is missing"]


def test_entry_without_a_record_is_rebuilt(tmp_path, capsys):
    build, entry = Builder(), tmp_path / "entry"
    cached_entry(entry, build)
    Path(f"{entry}.manifest.json").unlink()  # as written before hashes were recorded
    cached_entry(entry, build)
    assert build.calls == 2 and Path(f"{entry}.manifest.json").exists()
    assert capsys.readouterr().err.strip() == (f"objbench: warning: cache entry {entry} has no "
                                               f"readable record of its hashes; rebuilding it")
