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
#: The data formats (``DataFormat.kind``) that write points of each command-line manifold.
FORMAT_KINDS = {"sphere": ("latlon", "xyz"), "torus": ("angles",), "so3": ("matrix", "quaternion"),
                "mesh": ("mesh_xyz",)}


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
    ``est.save``: then the manifold's default format). ``DataError`` for a missing file, a folder,
    another kind of file, or a model whose arrays ``DiffusionKernelSmoother.load`` refuses."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a model file (.npz written by heatscore fit)")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such model file")
    if not is_model_file(path):
        raise DataError(f"{path}: not a heatscore model (.npz written by heatscore fit)")
    try:
        est = DiffusionKernelSmoother.load(path)     # names the file and the array it refuses
    except ValueError as exc:
        raise DataError(str(exc)) from None
    entry = FORMAT_ENTRY[:-4]
    try:
        with np.load(path, allow_pickle=False) as z:
            if entry not in z.files:
                return est, default_format(est.manifold)
            fmt = DataFormat.from_json(z[entry].tobytes().decode())
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: array {entry!r} is not a data format ({exc})") from None
    if fmt.kind not in FORMAT_KINDS.get(est.manifold.cli_name, ()):
        raise DataError(f"{path}: array {entry!r} holds the format {fmt.kind!r}, which does not "
                        f"write points on {est.manifold!r}")
    return est, fmt
