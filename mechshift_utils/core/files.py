"""Artifacts on disk: written atomically, with a checksum beside them, checked when read.

Writing: an artifact is written under a staging name unique to the writing process, in its own
folder (``.<name>.<pid>-<random>.tmp``), flushed to disk and renamed into place with
``os.replace``. A reader sees the old file or the new one, never part of one; an interrupt
leaves at most a stray staging file; two runs writing the same artifact at once never mix bytes.

Checksums: a file's SHA-256 goes beside it in ``<name>.sha256``, one line in the format of
``sha256sum`` (so ``sha256sum -c ioi.jsonl.sha256`` checks it by hand). One file per artifact,
not one manifest per folder: the files of a folder are written at different times, by different
notebooks, sometimes by two processes at once, and a shared manifest would need read-modify-write
under a lock; a side file is written with its artifact. A folder written as one unit (a model
checkpoint: weights, config, tokenizer) is staged whole and renamed into place, with a
``SHA256SUMS`` manifest of its files inside. The rename of a file and of its checksum happen
under an exclusive lock of the folder (``flock``), and readers take the shared lock while they
pair the two, so a reader never matches one writer's file with another's checksum.

Reading: :func:`file_problem` / :func:`folder_problem` say what is wrong (missing, no checksum,
checksum mismatch) or None; :func:`verify_file` / :func:`verify_folder` raise :class:`ArtifactError`,
whose message names the file and the fix. An artifact without its checksum is not trusted (it
may be from before checksums were recorded, or its writer died between the two renames): code that
can rebuild it does so, other code stops and says how to rebuild it.

Writes hash the staged file once, right after writing it (from the page cache); reads hash the
file they check. Nothing is hashed twice on the same path.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no folder locks; the renames alone still keep each file whole
    fcntl = None

CHECKSUM_SUFFIX = ".sha256"
MANIFEST = "SHA256SUMS"
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """An artifact on disk cannot be used; the message names the file, what is wrong and the fix."""

    def __init__(self, path, problem: str, fix: str):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path}: {problem}. {fix}")


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _staging_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


@contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    try:
        _fsync(folder)  # the renames themselves; not every platform lets a folder be fsynced
    except OSError:
        pass


def _checksum_line(digest: str, name: str) -> str:
    return f"{digest}  {name}\n"


def _read_checksum(line_file: Path) -> str | None:
    try:
        text = line_file.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    parts = text.split()
    return parts[0] if parts and len(parts[0]) == 64 else None


# --- files -----------------------------------------------------------------------------------------

def write_with(path, write: Callable[[Path], object]) -> Path:
    """Write an artifact by calling ``write(staging_path)`` (e.g. ``lambda p: torch.save(state, p)``),
    then move it into place with its checksum. A ``write`` that raises leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_name(path, ".tmp")
    side = _staging_name(checksum_path(path), ".tmp")
    try:
        write(staging)
        _fsync(staging)
        side.write_text(_checksum_line(sha256_of(staging), path.name))
        _fsync(side)
        with _folder_lock(path.parent, exclusive=True):
            os.replace(staging, path)
            os.replace(side, checksum_path(path))
        _fsync_folder(path.parent)
    finally:
        for leftover in (staging, side):
            leftover.unlink(missing_ok=True)
    return path


def write_bytes(path, data: bytes) -> Path:
    return write_with(path, lambda p: Path(p).write_bytes(data))


def write_text(path, text: str) -> Path:
    return write_with(path, lambda p: Path(p).write_text(text))


def remove(path) -> None:
    """Delete an artifact and its checksum (missing ones are fine)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def file_problem(path) -> str | None:
    """What is wrong with an artifact file, or None when it matches its recorded checksum."""
    path = Path(path)
    with _folder_lock(path.parent, exclusive=False) if path.parent.is_dir() else _no_lock():
        if not path.is_file():
            return "is missing"
        recorded = _read_checksum(checksum_path(path))
        try:
            handle = open(path, "rb")  # the file as it is now, even if a writer replaces it next
        except OSError as err:
            return f"cannot be opened ({err.strerror})"
    with handle:
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    if recorded is None:
        return f"has no checksum file {checksum_path(path).name} (written by an older version, or cut off)"
    if digest.hexdigest() != recorded:
        return f"does not match its checksum in {checksum_path(path).name} (truncated or changed since written)"
    return None


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def verify_file(path, fix: str) -> Path:
    """``path`` when it matches its checksum; else ArtifactError naming it and ``fix``."""
    problem = file_problem(path)
    if problem is not None:
        raise ArtifactError(path, problem, fix)
    return Path(path)


# --- folders written as one unit ------------------------------------------------------------------

@contextmanager
def staged_folder(path) -> Iterator[Path]:
    """Build a folder artifact (e.g. a checkpoint) in a staging folder; on success its files get a
    ``SHA256SUMS`` manifest and the folder replaces ``path`` in one rename. On failure nothing changes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_name(path, ".staging")
    staging.mkdir()
    try:
        yield staging
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        lines = []
        for file in files:
            _fsync(file)
            lines.append(_checksum_line(sha256_of(file), file.relative_to(staging).as_posix()))
        (staging / MANIFEST).write_text("".join(lines))
        _fsync(staging / MANIFEST)
        _fsync_folder(staging)
        with _folder_lock(path.parent, exclusive=True):
            old = None
            if path.exists():
                old = _staging_name(path, ".old")
                os.replace(path, old)
            os.replace(staging, path)
        _fsync_folder(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def folder_problem(path) -> str | None:
    """What is wrong with a folder artifact, or None when every file of its manifest matches."""
    path = Path(path)
    with _folder_lock(path.parent, exclusive=False) if path.parent.is_dir() else _no_lock():
        if not path.is_dir():
            return "is missing"
        manifest = path / MANIFEST
        try:
            lines = manifest.read_text().splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return f"has no {MANIFEST} manifest (written by an older version, or cut off)"
    for line in lines:
        recorded, _, name = line.partition("  ")
        file = path / name
        if not file.is_file():
            return f"lacks {name}, listed in its {MANIFEST}"
        if sha256_of(file) != recorded:
            return f"{name} does not match its checksum in {MANIFEST} (truncated or changed since written)"
    return None


def verify_folder(path, fix: str) -> Path:
    problem = folder_problem(path)
    if problem is not None:
        raise ArtifactError(path, problem, fix)
    return Path(path)


def jsonl_records(path, fix: str) -> list[dict]:
    """The records of a JSON-lines artifact, checked against its checksum; a damaged file stops with
    the file's name and the number of its first bad line (counted from 1, as an editor does)."""
    import json

    path = Path(path)
    problem = file_problem(path)
    if problem == "is missing":
        raise ArtifactError(path, problem, fix)
    records, bad = [], None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\r\n")
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                bad = f"line {number} is not valid JSON: {err.msg} (column {err.colno})"
            except UnicodeDecodeError:
                bad = f"line {number} is not UTF-8 text"
            if bad:
                break
    if problem or bad:
        raise ArtifactError(path, "; ".join(p for p in (problem, bad) if p), fix)
    return records
