"""Opening an input file only when it is a regular file, so no path can hang or flood a read.

A FIFO blocks ``open`` until a writer comes, a socket cannot be opened, ``/dev/zero`` never ends
and a folder is no file: every input the toolkit reads (channel images, CSVs) goes through
:func:`open_regular`, which refuses anything but a regular file in one line naming it
(``x_red.png: not a regular file (a FIFO)``) before a byte is read.

The check is ``os.stat`` (symlinks followed: the callers apply their own link policy first, e.g.
runtime/reader.py keeps links inside the image folder) immediately before opening, so nothing
that is not a regular file is ever opened (opening a device can have effects of its own). The open
itself uses ``O_NONBLOCK`` and the opened descriptor is checked again with ``fstat``: a path
swapped for a FIFO between the two checks opens at once (a FIFO opened read-only and
non-blocking does not wait for a writer) and is then refused like any other, so no race can hang
a read.
"""

import os
import stat

from runtime.errors import DataError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def kind_of(mode):
    """'a FIFO', 'a folder', ... for a stat mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


class NotRegularFile(DataError):
    """``path: not a regular file (a FIFO)``; ``kind`` says what it is instead."""

    def __init__(self, path, kind):
        self.kind = kind
        super().__init__(path, f"not a regular file ({kind})")

    def __reduce__(self):
        return type(self), (self.path, self.kind)


def check_regular(path):
    """``os.stat(path)`` when it is a regular file; NotRegularFile otherwise. OSError (missing,
    permission, name too long, link loop) propagates for the caller to word."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(path, kind_of(st.st_mode))
    return st


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def open_regular_fd(path, lstat_result=None):
    """(file descriptor, os.stat_result) of ``path`` opened read-only, refusing anything but a
    regular file before and after opening (see the module); the caller closes the descriptor.
    On a regular file ``O_NONBLOCK`` changes nothing, so it is left set (one system call less
    for each of the four files of every sample).

    ``lstat_result``: an ``os.lstat(path)`` the caller has just taken (the reader's lookup of a
    channel file does). When it shows a regular file, it is the check before opening, in place of
    another ``os.stat``, and the path is opened with ``O_NOFOLLOW``: a path swapped for a symlink
    since is refused (ELOOP), never followed, so the caller's link policy still holds. When it
    shows a symlink, the link is checked and followed as without it; anything else is refused."""
    if lstat_result is not None and not stat.S_ISLNK(lstat_result.st_mode):
        if not stat.S_ISREG(lstat_result.st_mode):
            raise NotRegularFile(path, kind_of(lstat_result.st_mode))
        flags = _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0)
    else:
        check_regular(path)
        flags = _OPEN_FLAGS
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, kind_of(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path, mode="rb", **kwargs):
    """(file object, os.stat_result) of ``path`` opened for reading (``mode`` and ``kwargs`` as for
    ``open``), refusing anything but a regular file before and after opening (see the module)."""
    fd, st = open_regular_fd(path)
    try:
        return os.fdopen(fd, mode, **kwargs), st
    except BaseException:
        os.close(fd)
        raise
