"""Sample Ids: what the toolkit accepts as an Id, stated once.

An Id becomes part of file names (``{Id}_red.png``) and of CSV rows, so only letters, digits,
'_', '-' and '.' are accepted, starting with a letter or digit and without '..': such an Id can
never name a file outside the image folder nor break a CSV row."""

import re

from runtime.errors import DataError

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_safe_id(sample_id):
    return isinstance(sample_id, str) and _SAFE_ID.fullmatch(sample_id) is not None and ".." not in sample_id


def check_id(sample_id, source="Id"):
    """The Id itself, or DataError naming ``source`` when it is unsafe or empty."""
    if not is_safe_id(sample_id):
        raise DataError(source, f"unsafe or empty Id {sample_id!r} (allowed: letters, digits, '_', '-', '.', no '..')")
    return sample_id
