"""Safe loading of NumPy files: no pickles, and a corrupt or foreign file is
a `DataError` naming it, never a NumPy traceback.

Minimal version (the issue-9 branch brings header checks); every `.npz` and
`.npy` the harness reads goes through these two functions.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from harness.errors import DataError


def _fail(path: Path, what: str, exc: BaseException, kind: str) -> DataError:
    text = str(exc).strip().splitlines()
    why = text[0] if text else type(exc).__name__
    return DataError(f"cannot read {what} {path}: {why}", f"check that it is a NumPy {kind} written by NumPy")


def load_npz(path: str | os.PathLike, *, what: str) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, read into memory (the archive is closed)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("it holds a single array (.npy), not an archive of arrays")
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, what, exc, ".npz") from exc


def load_npy(path: str | os.PathLike, *, what: str) -> np.ndarray:
    """The array of an `.npy`."""
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, what, exc, ".npy") from exc
    if not isinstance(a, np.ndarray):
        a.close()
        raise DataError(f"cannot read {what} {path}: it is an .npz archive, not an .npy", "pass an .npy file")
    return a
