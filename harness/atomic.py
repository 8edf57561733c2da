"""Atomic file writes: temp file in the same folder, fsync, ``os.replace``, directory fsync.

Readers see the old file or the new one, never half of one. ``mkstemp`` creates its temp file
with mode 0600; the rename would carry that mode to the result, so nobody else in a group could
read a shared result store and a web server could not serve a published leaderboard. Every
writer here sets the mode the user's umask gives a new file (0644 under umask 022) before the
rename. All writers of records, caches, checkpoints and leaderboards go through this module.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def atomic_write(path: Path | str, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp_path)`` fills a temp file that is then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()

    return atomic_write(path, write)


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (matters on shared / journaled filesystems)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def generated_folder(root: Path | str, marker: str, write: Callable[[Path], None], what: str) -> Path:
    """A generated folder (a synthetic dataset, a tiny model), written once: ``write(tmp)`` fills a
    temporary sibling that is renamed into place, so a reader never sees a half-written folder and
    concurrent writers (SLURM array tasks) race harmlessly. ``marker``: a file that exists when done."""
    import os
    import shutil
    import tempfile

    from .errors import BobError

    root = Path(root)
    if (root / marker).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, root)  # another process may have won the race: its copy is identical
        except OSError:
            if not (root / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (root / marker).is_file():
        raise BobError(f"could not write the generated {what} into {root}")
    return root
