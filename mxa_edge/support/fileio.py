"""Small file helpers: atomic writes and hashing.

Everything the toolkit publishes (checkpoints, manifests, metrics, exported artifacts) is
written under a temporary name in the same folder and renamed when complete, so a killed
process never leaves a half-written file under the real name.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode(0o666))  # mkstemp makes it owner-only; publish with the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 folders) less the process umask: what open()/mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_dir(path: Path):
    """Yield a temporary folder beside ``path``; it replaces ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, default_mode(0o777))  # mkdtemp makes it owner-only
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    OS, libc or file system does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def previous_path(dest: Path) -> Path:
    """Where ``replace_dir`` keeps the folder it replaces while it swaps (fallback only)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.previous")


def replace_dir(new: Path, dest: Path) -> None:
    """Put the complete folder ``new`` at ``dest``, replacing what is there, crash-safely.

    Where the OS can swap two paths atomically (Linux), ``dest`` always holds one complete
    folder, old or new. Elsewhere the old folder is moved aside first: a kill between the two
    moves leaves it complete at ``previous_path(dest)``, and ``restore_interrupted`` puts it back.
    """
    new, dest = Path(new), Path(dest)
    restore_interrupted(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new)
        return
    aside = previous_path(dest)
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(dest, aside)
    os.replace(new, dest)
    shutil.rmtree(aside)


def restore_interrupted(dest: Path) -> bool:
    """Undo a ``replace_dir`` killed between its two moves: the previous folder goes back."""
    dest, aside = Path(dest), previous_path(dest)
    if not dest.exists() and aside.is_dir():
        os.replace(aside, dest)
        return True
    return False
