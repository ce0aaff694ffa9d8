"""Reading label and Id files in the Kaggle layout (``Id,Target`` with space-separated classes).

Files with a UTF-8 BOM or CRLF line endings are accepted. Every problem raises
:class:`DataError` naming the file, the line and the reason.
"""

import csv
from pathlib import Path

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.errors import DataError
from runtime.ids import check_id


def _rows(path, required):
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "missing file") from None
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(path, f"expected columns {', '.join(required)}; header is {header}")
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise DataError(path, "not a UTF-8 text CSV file") from None


def parse_target(text, where):
    """'16 0' -> [0, 16]; raises DataError for anything that is not a class index 0..27."""
    labels = set()
    for token in (text or "").split():
        try:
            value = int(token)
        except ValueError:
            raise DataError(where, f"label {token!r} is not a number") from None
        if not 0 <= value < NUM_CLASSES:
            raise DataError(where, f"label {value} outside 0..{NUM_CLASSES - 1}")
        labels.add(value)
    return sorted(labels)


def read_labels(path, column="Target"):
    """{Id: sorted class list} from a ``Id,Target`` CSV (or a submission's ``Id,Predicted`` with
    ``column="Predicted"``), in file order. An empty list of classes is allowed; duplicates are
    refused."""
    labels = {}
    for line, row in _rows(path, ("Id", column)):
        where = f"{path} line {line}"
        sample_id = check_id((row["Id"] or "").strip(), where)
        if sample_id in labels:
            raise DataError(where, f"duplicate Id {sample_id}")
        labels[sample_id] = parse_target(row[column], where)
    if not labels:
        raise DataError(path, "no rows")
    return labels


def read_ids(path):
    """The Id column of a CSV (a ``sample_submission.csv`` or a labels file), in file order."""
    ids, seen = [], set()
    for line, row in _rows(path, ("Id",)):
        where = f"{path} line {line}"
        sample_id = check_id((row["Id"] or "").strip(), where)
        if sample_id in seen:
            raise DataError(where, f"duplicate Id {sample_id}")
        seen.add(sample_id)
        ids.append(sample_id)
    return ids


def read_manifest(path):
    """{Id: sub-folder} from a split manifest (``Id,dir``)."""
    out = {}
    for line, row in _rows(path, ("Id", "dir")):
        where = f"{path} line {line}"
        sub = (row["dir"] or "").strip()
        check_id(sub, where)
        out[check_id((row["Id"] or "").strip(), where)] = sub
    return out


def multi_hot(label_lists):
    """(N, 28) float32 matrix from a list of class lists."""
    y = np.zeros((len(label_lists), NUM_CLASSES), dtype=np.float32)
    for i, classes in enumerate(label_lists):
        y[i, classes] = 1.0
    return y


def format_target(classes):
    return " ".join(str(int(c)) for c in classes)
