"""Model files of the ``heatscore`` command: the estimator's own ``.npz`` (no pickle) with the
data format of its CSV added as a JSON entry."""

import io
import os
import zipfile

import numpy as np

from heatscore._cli_formats import DataError, DataFormat, default_format
from heatscore.estimators import DiffusionKernelSmoother
from heatscore._files import temporary_path

#: Name of the data-format entry added to a saved model's .npz.
FORMAT_ENTRY = "cli_format.npy"


def save_model(est, fmt, path):
    """``est.save`` (npz, no pickle) with the data format ``fmt`` added as a JSON entry; atomic."""
    entry = io.BytesIO()
    np.save(entry, np.frombuffer(fmt.to_json().encode(), dtype=np.uint8), allow_pickle=False)
    with temporary_path(path) as tmp:
        est.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(FORMAT_ENTRY, entry.getvalue())


def is_model_file(path):
    """True when ``path`` starts like a zip (.npz) archive."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load_model(path):
    """``(DiffusionKernelSmoother, DataFormat)`` from a file written by ``save_model`` (or by
    ``est.save``: then the manifold's default format)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such model file")
    if not is_model_file(path):
        raise DataError(f"{path}: not a heatscore model (.npz written by heatscore fit)")
    try:
        est = DiffusionKernelSmoother.load(path)
        with np.load(path, allow_pickle=False) as z:
            entry = z[FORMAT_ENTRY[:-4]] if FORMAT_ENTRY[:-4] in z.files else None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable heatscore model ({exc})") from None
    fmt = default_format(est.manifold) if entry is None else DataFormat.from_json(entry.tobytes().decode())
    return est, fmt
