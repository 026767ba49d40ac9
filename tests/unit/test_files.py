"""files.py: the one way the package replaces a file whole (temp file, fsync, rename)."""

from __future__ import annotations

import ast
import gzip
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import hw_picollector
from hw_picollector import checkpoints, files, metrics, store, sync
from hw_picollector.checkpoints import Checkpoint
from hw_picollector.collect import state_file
from hw_picollector.config import parse_config
from hw_picollector.state_document import CollectorState
from hw_picollector_controller import freshness, sites

PACKAGE = Path(hw_picollector.__file__).resolve().parent


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(files.TEMP_SUFFIX))


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Every os.fsync and os.replace, in order: ("fsync", what the fd is, inode) and
    ("replace", destination, inode of the source)."""
    events: list[tuple[str, str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        events.append(("replace", str(dst), os.stat(src).st_ino))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_content_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("a much longer old content than the new one\n")
    files.replace_atomically(path, "new", durable=False)
    assert path.read_text() == "new"
    files.replace_atomically(path, b"\x00bytes\xff", durable=True)
    assert path.read_bytes() == b"\x00bytes\xff"
    files.replace_atomically(path, "é ✓", durable=False)
    assert path.read_bytes() == "é ✓".encode()
    with files.atomic_writer(path, durable=True) as fh:
        fh.write(b"part one, ")
        fh.write(b"part two")
    assert path.read_bytes() == b"part one, part two"
    assert leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_the_temporary_file_is_beside_the_target_and_recognisable(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    with files.atomic_writer(path, durable=False) as fh:
        fh.write(b"x")
        (tmp,) = leftovers(tmp_path)
        assert not path.exists()  # nothing in place before the block ends
    assert tmp.startswith(f".{path.name}.{os.getpid()}.") and tmp.endswith(".tmp")
    assert files.temp_path(path) != files.temp_path(path)  # two writers never share one
    assert path.read_bytes() == b"x" and leftovers(tmp_path) == []


@pytest.mark.parametrize("durable", [False, True])
def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(
        tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-write"), \
            files.atomic_writer(path, durable=durable) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("mid-write")
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), files.atomic_writer(path, durable=durable) as fh:
        fh.write(b"new")
        raise KeyboardInterrupt  # not only Exception: a stop mid-write too
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_failed_rename_or_fsync_leaves_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"old")

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        files.replace_atomically(path, b"new", durable=True)
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        files.replace_atomically(path, b"new", durable=False)
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_missing_directory_is_the_callers_to_make(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.replace_atomically(tmp_path / "absent" / "a.json", b"x", durable=False)
    assert not (tmp_path / "absent").exists()


def test_durable_fsyncs_the_file_before_the_rename_and_the_directory_after(
        tmp_path: Path, synced: list[tuple[str, str, int]]) -> None:
    path = tmp_path / "2026-11-20.json"
    path.write_bytes(b"old")
    files.replace_atomically(path, b"new", durable=True)
    ino = path.stat().st_ino
    assert [(kind, what) for kind, what, _ in synced] == [
        ("fsync", synced[0][1]), ("replace", str(path)), ("fsync", str(tmp_path))]
    # the file synced is the temporary that became the path, synced while it was the temporary
    assert Path(synced[0][1]).parent == tmp_path and synced[0][1].endswith(".tmp")
    assert synced[0][2] == synced[1][2] == ino
    assert synced[2][2] == tmp_path.stat().st_ino


def test_not_durable_fsyncs_nothing(tmp_path: Path, synced: list[tuple[str, str, int]]) -> None:
    files.replace_atomically(tmp_path / "a.prom", b"x", durable=False)
    with files.atomic_writer(tmp_path / "b", durable=False) as fh:
        fh.write(b"y")
    assert [kind for kind, _, _ in synced] == ["replace", "replace"]


@pytest.mark.usefixtures("umask")
def test_modes(tmp_path: Path) -> None:
    path = tmp_path / "f"

    def mode() -> int:
        return stat.S_IMODE(path.stat().st_mode)

    files.replace_atomically(path, b"x", durable=False)
    assert mode() == 0o644  # what open() gives: 0666 less the umask
    files.replace_atomically(path, b"x", durable=False, mode=0o600)
    assert mode() == 0o600  # a key stays private
    os.umask(0o077)
    files.replace_atomically(path, b"x", durable=True, mode=0o644)
    assert mode() == 0o644  # whatever the umask: node_exporter reads the metrics
    files.replace_atomically(path, b"x", durable=False)
    assert mode() == 0o600
    os.umask(0o002)
    files.replace_atomically(path, b"x", durable=False)
    assert mode() == 0o664
    files.replace_atomically(path, b"x", durable=False, create_mode=0o644)
    assert mode() == 0o644  # the status file's creation mode, less the umask
    os.umask(0o027)
    files.replace_atomically(path, b"x", durable=False, create_mode=0o644)
    assert mode() == 0o640


# -- each writer's choice of durability ----------------------------------------------------


def dirs_synced(events: list[tuple[str, str, int]]) -> list[str]:
    return [what for kind, what, _ in events if kind == "fsync" and Path(what).is_dir()]


def test_checkpoints_and_last_sync_are_durable(
        tmp_path: Path, synced: list[tuple[str, str, int]]) -> None:
    checkpoints.write(tmp_path, "3c39e7000001", "2026-11-20", Checkpoint(10, "t", 1))
    checkpoints.write_last_sync(tmp_path, {"ok": True})
    assert dirs_synced(synced) == [str(tmp_path / "sync" / "3c39e7000001"),
                                   str(tmp_path / "sync")]
    assert checkpoints.read(tmp_path, "3c39e7000001", "2026-11-20") == Checkpoint(10, "t", 1)
    assert leftovers(tmp_path / "sync") == []


def test_a_compressed_day_is_durable_before_the_original_goes(
        tmp_path: Path, synced: list[tuple[str, str, int]]) -> None:
    config = parse_config({"site_id": "S", "data_dir": str(tmp_path), "devices": []})
    folder = store.device_dir(tmp_path, "3c39e7000009")
    folder.mkdir(parents=True)
    day = folder / "2026-11-20.csv"
    day.write_text("ts,power_w,extra\n2026-11-20T00:00:00.000Z,1,\n")
    checkpoints.write(tmp_path, "3c39e7000009", "2026-11-20",
                      Checkpoint(day.stat().st_size, "2026-11-20T00:00:00.000Z", 1, True))
    synced.clear()
    assert sync.retention(config, now=datetime(2026, 11, 26, tzinfo=UTC)) == (1, 0)
    gz = folder / "2026-11-20.csv.gz"
    assert [(kind, what) for kind, what, _ in synced][1:] == [
        ("replace", str(gz)), ("fsync", str(folder))]
    assert synced[0][0] == "fsync" and synced[0][2] == gz.stat().st_ino
    assert gzip.decompress(gz.read_bytes()).decode() == (
        "ts,power_w,extra\n2026-11-20T00:00:00.000Z,1,\n")
    assert sorted(p.name for p in folder.iterdir()) == ["2026-11-20.csv.gz"]


def test_the_inventory_is_durable_and_0644(
        tmp_path: Path, synced: list[tuple[str, str, int]], umask: None) -> None:
    os.umask(0o077)
    path = tmp_path / "inv" / "hosts.yml"
    assert sites.write_atomic(path, "---\n")
    assert dirs_synced(synced) == [str(path.parent)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not sites.write_atomic(path, "---\n")  # identical: not written again


def test_snapshots_are_not_synced(tmp_path: Path, synced: list[tuple[str, str, int]],
                                  monkeypatch: pytest.MonkeyPatch, umask: None) -> None:
    os.umask(0o027)
    state_file.write_state(tmp_path / "state" / "collector.json", CollectorState())
    freshness.write_atomic(tmp_path / "reports" / "freshness-latest.json", "{}\n")
    monkeypatch.setattr(metrics, "registry", lambda _report: None)
    monkeypatch.setattr(metrics, "generate_latest", lambda _registry: b"# metrics\n")
    metrics.write({}, tmp_path / "hwpc.prom")
    assert [kind for kind, _, _ in synced] == ["replace"] * 3
    assert stat.S_IMODE((tmp_path / "state" / "collector.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "reports" / "freshness-latest.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "hwpc.prom").stat().st_mode) == 0o644


def test_on_a_full_disk_the_status_is_written_in_place_without_a_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "collector.json"
    state_file.write_state(path, CollectorState(clock="a longer first snapshot"))

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    state_file.write_state(path, CollectorState(clock="full"))
    assert path.read_text().rstrip(" ") == CollectorState(clock="full").to_json()
    assert leftovers(tmp_path) == []


# -- no seventh variant --------------------------------------------------------------------

RENAMES = {"replace", "rename", "renames", "move"}


def renames_in(source: str) -> list[int]:
    """Lines that move a file into place: os.replace/rename/renames(...), shutil.move(...),
    ``<path>.replace(target)`` / ``<path>.rename(target)`` (one positional argument, no
    keywords: ``str.replace`` takes two, ``datetime``/``dataclasses.replace`` keywords), and
    ``from os import replace``-style imports."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil") \
                and any(a.name in RENAMES for a in node.names):
            lines.append(node.lineno)
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in RENAMES):
            continue
        owner = node.func.value
        of_module = isinstance(owner, ast.Name) and owner.id in ("os", "shutil")
        of_path = node.func.attr in ("replace", "rename") and len(node.args) == 1 \
            and not node.keywords
        if of_module or of_path:
            lines.append(node.lineno)
    return lines


def test_the_guard_tells_a_rename_from_other_replaces() -> None:
    flagged = """
os.replace(tmp, path)
tmp.replace(path)
Path(tmp).rename(target)
shutil.move(a, b)
from os import rename
"""
    assert sorted(renames_in(flagged)) == [2, 3, 4, 5, 6]
    fine = """
name.replace("/", "\\\\/")
dt.replace(tzinfo=UTC)
dataclasses.replace(cp, complete=True)
os.path.normpath(joined).replace(os.sep, "/")
blob.replace(b'"', b'""')
"""
    assert renames_in(fine) == []


def test_only_files_py_moves_a_file_into_place() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "files.py":
            continue
        if lines := renames_in(path.read_text(encoding="utf-8")):
            found[str(path.relative_to(PACKAGE))] = lines
    assert found == {}, f"use hw_picollector.files (replace_atomically/atomic_writer): {found}"
    assert renames_in((PACKAGE / "files.py").read_text(encoding="utf-8"))  # the guard sees it
