"""Files the services keep in the data directory, written so that a crash
leaves the old version or the new one, never a torn one."""

import os

__all__ = ("atomic_write", "fsync_dir")


def fsync_dir(d):
    """Make the names in directory ``d`` durable (a rename, a removal)."""
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, text, d=None):
    """Replace ``path`` by ``text`` (str or bytes): written to a temporary
    file (mode 0600: these files may hold credentials), fsync'd, renamed
    over ``path``, the directory ``d`` (default: the file's) fsync'd."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = text.encode() if isinstance(text, str) else bytes(text)
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(d if d is not None else os.path.dirname(os.path.abspath(path)))
