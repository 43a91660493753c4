"""Atomic file writing: a temporary name in the target folder, then ``os.replace``, so a failure
(or a kill) leaves either the old file or the new one, never half of one."""

import contextlib
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def temporary_path(path):
    """Yield a temporary file name next to ``path``; on success rename it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())              # mkstemp's 0600 -> the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, write, text=False):
    """Call ``write(file object)`` on a temporary file next to ``path``, then rename it to ``path``."""
    with temporary_path(path) as tmp:
        with open(tmp, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
            write(fh)
