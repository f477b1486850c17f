"""Reading .npy/.npz files that may be hostile, truncated or corrupt.

Every array tinyhil reads from a user's file comes through here: pickles
are never loaded (object arrays are refused), the `.npy` header is read
*before* anything is allocated and a shape whose byte size exceeds what the
file can hold (or `MAX_BYTES`) is refused, and a damaged file -- truncated,
bad CRC, not a zip at all -- is a `DataError` that says the file is corrupt,
not that it is missing.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from harness.errors import DataError

# The largest array accepted (bytes once loaded); a validation or training
# set beyond this is not something a microcontroller is validated with.
MAX_BYTES = int(os.environ.get("HIL_MAX_ARRAY_BYTES", str(4 << 30)))
# A DEFLATE stream expands at most ~1032x; anything claiming more is lying.
_MAX_DEFLATE_RATIO = 1100

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"


def _corrupt(path: Path, what: str, why: str) -> DataError:
    return DataError(
        f"cannot read {what} {path}: the file is corrupt ({why})",
        "write it again (e.g. re-run `hil convert`, or np.save/np.savez)",
    )


def _missing(path: Path, what: str) -> DataError:
    if path.is_dir():
        return DataError(f"{what} {path} is a folder", "pass an .npz or .npy file")
    return DataError(f"{what} {path} does not exist", "check the path")


def _header(fp, path: Path, what: str, name: str | None = None):
    """(shape, fortran_order, dtype) of the .npy at `fp`, checked."""
    where = f"{path}[{name}]" if name else str(path)
    try:
        version = npformat.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp, max_header_size=100000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp, max_header_size=100000)
        else:  # pragma: no cover - numpy rejects other versions in read_magic
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise _corrupt(
            path, what, f"{name + ': ' if name else ''}bad .npy header ({str(exc).splitlines()[0][:120]})"
        ) from exc
    if dtype.hasobject:
        raise DataError(
            f"{what} {where} holds Python objects (dtype {dtype}), which are never loaded",
            "save numeric arrays (e.g. float32, int8), not object arrays",
        )
    if any(int(d) < 0 for d in shape):
        raise _corrupt(path, what, f"negative shape {shape}")
    return tuple(int(d) for d in shape), fortran, dtype


def _check_size(shape, dtype, budget: int, path: Path, what: str, name: str | None) -> int:
    nbytes = math.prod(shape) * dtype.itemsize
    where = f"{path}[{name}]" if name else str(path)
    if nbytes > MAX_BYTES:
        raise DataError(
            f"{what} {where} claims shape {list(shape)} ({nbytes:,} bytes), more than the {MAX_BYTES:,} allowed",
            "pass a smaller data set (or raise HIL_MAX_ARRAY_BYTES)",
        )
    if nbytes > budget:
        raise _corrupt(
            path,
            what,
            f"{name + ': ' if name else ''}its header claims {nbytes:,} bytes of data, "
            f"the file holds at most {budget:,}",
        )
    return nbytes


def _read_npy(fp, path: Path, what: str, budget: int, name: str | None = None) -> np.ndarray:
    shape, fortran, dtype = _header(fp, path, what, name)
    nbytes = _check_size(shape, dtype, budget, path, what, name)
    try:
        data = fp.read(nbytes)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise _corrupt(path, what, f"{name + ': ' if name else ''}{str(exc).splitlines()[0][:120]}") from exc
    if len(data) != nbytes:
        raise _corrupt(path, what, f"{name + ': ' if name else ''}truncated ({len(data):,} of {nbytes:,} bytes)")
    a = np.frombuffer(data, dtype=dtype)
    if fortran:
        return a.reshape(shape[::-1]).transpose().copy()
    return a.reshape(shape).copy()


def load_npy(path: str | os.PathLike, *, what: str) -> np.ndarray:
    """The array in the .npy file `path`; `what` names it in errors
    ("validation data", "training data")."""
    path = Path(path)
    try:
        size = path.stat().st_size
        fp = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise _missing(path, what) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror}", "check the file's permissions") from exc
    with fp:
        magic = fp.read(6)
        if magic != NPY_MAGIC:
            hint = " (it is a zip: name it .npz)" if magic.startswith(ZIP_MAGIC) else ""
            raise _corrupt(path, what, f"not a NumPy .npy file{hint}")
        fp.seek(0)
        return _read_npy(fp, path, what, budget=size)


def load_npz(path: str | os.PathLike, *, what: str) -> dict[str, np.ndarray]:
    """Every array of the .npz file `path`, by name (without `.npy`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(6)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise _missing(path, what) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror}", "check the file's permissions") from exc
    if not magic.startswith(ZIP_MAGIC):
        hint = " (it is an .npy: name it .npy)" if magic == NPY_MAGIC else ""
        raise _corrupt(path, what, f"not a NumPy .npz (zip) file{hint}")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.is_dir():
                    continue
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if info.compress_type == zipfile.ZIP_STORED:
                    budget = info.file_size
                else:
                    budget = min(info.file_size, info.compress_size * _MAX_DEFLATE_RATIO + 4096)
                if info.compress_size > size:
                    raise _corrupt(path, what, f"{name}: entry larger than the file (truncated?)")
                with z.open(info) as fp:
                    arr = _read_npy(fp, path, what, budget, name)
                    # Reading to the end makes zipfile check the CRC.
                    if fp.read(1):
                        raise _corrupt(path, what, f"{name}: data after the array")
                out[name] = arr
    except zipfile.BadZipFile as exc:
        raise _corrupt(
            path, what, f"not a complete zip archive, truncated? ({str(exc).splitlines()[0][:100]})"
        ) from exc
    except (zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise _corrupt(path, what, str(exc).splitlines()[0][:120] or type(exc).__name__) from exc
    return out


def load_arrays(path: str | os.PathLike, *, what: str) -> dict[str, np.ndarray]:
    """An .npz (its arrays) or an .npy (as {"x": array}), by content, not name."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise _missing(path, what) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror}", "check the file's permissions") from exc
    if magic == NPY_MAGIC:
        return {"x": load_npy(path, what=what)}
    return load_npz(path, what=what)
