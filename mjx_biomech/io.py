"""Atomic file writing and the checks every reader and writer of text files shares."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from mjx_biomech.errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A failure while writing leaves any earlier file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; an ``InputError`` naming the file otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:  # a path with a NUL character
        raise InputError(f"{path}: not a usable path ({e})") from None


def check_increasing_rows(path: Path, times, row_lines: list[int]) -> None:
    """Times read from a file must strictly increase; the error names both lines."""
    import numpy as np

    times = np.asarray(times, dtype=float)
    bad = np.flatnonzero(~(np.diff(times) > 0))
    if bad.size:
        k = int(bad[0])
        raise InputError(
            f"{path}, line {row_lines[k + 1]}: time {float(times[k + 1])!r} follows time {float(times[k])!r} "
            f"(line {row_lines[k]}); times must strictly increase"
        )


def check_times_argument(times) -> None:
    """Times given to a writer must be finite and strictly increase; the error names the samples."""
    import numpy as np

    times = np.asarray(times, dtype=float)
    if not np.all(np.isfinite(times)):
        raise InputError("times: every time must be finite")
    bad = np.flatnonzero(np.diff(times) <= 0)
    if bad.size:
        k = int(bad[0])
        raise InputError(
            f"times: must strictly increase; times[{k}]={float(times[k])!r} "
            f"is followed by times[{k + 1}]={float(times[k + 1])!r}"
        )
