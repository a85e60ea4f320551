"""Writing a file so that a crash never leaves half of it: readers see the old file or the whole new one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    Args:
      path: the file to create or replace; its directory must exist.
      write: writes the whole content to the path it is given.

    Returns:
      ``path``. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
