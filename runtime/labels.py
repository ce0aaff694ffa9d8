"""Reading label and Id files in the Kaggle layout (``Id,Target`` with space-separated classes).

Files with a UTF-8 BOM or CRLF line endings are accepted. Every problem raises
:class:`DataError` naming the file, the line and the reason.
"""

import csv
import io
import re
from pathlib import Path

import numpy as np

from runtime.classes import NUM_CLASSES
from runtime.errors import DataError
from runtime.ids import check_id
from runtime.regular import NotRegularFile, open_regular


# *Decision*: no line of a CSV this toolkit reads or writes is near this long (a probabilities row
# is about 300 characters); csv reads a whole line before its field-size limit applies, so without
# a bound one line of a sparse 20 GB file would be read into memory.
MAX_LINE = 1 << 20


def bounded_lines(handle, path, limit=MAX_LINE):
    """The lines of a text ``handle``, each read at most ``limit`` characters far: a longer line is
    DataError naming ``path``, before the rest of it is read."""
    while line := handle.readline(limit + 1):
        if len(line) > limit:
            raise DataError(path, f"a line longer than {limit} characters: not a CSV file of this kind "
                                  "(not read further)")
        yield line


def read_rows(path, required):
    """(line number, row dict) of a CSV with the ``required`` columns. A missing file, a folder, a
    file that is not UTF-8 text or not CSV (a field over csv's 131,072-character limit, a stray
    NUL) raises DataError naming the file (and the line)."""
    path = Path(path)
    try:  # only a regular file is opened: a FIFO, socket or device never hangs a read (runtime.regular)
        handle, _ = open_regular(path, "r", newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "missing file") from None
    except NotRegularFile as err:
        raise DataError(path, "is a folder, expected a CSV file" if err.kind == "a folder"
                        else f"{err.reason}, expected a CSV file") from None
    with handle:
        reader = csv.DictReader(bounded_lines(handle, path), strict=True)  # an unclosed quote is an error
        try:
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(path, f"expected columns {', '.join(required)}; header is {header}")
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise DataError(path, "not a UTF-8 text CSV file") from None
        except csv.Error as err:
            raise DataError(f"{path} line {reader.line_num + 1}", f"not a valid CSV row ({err})") from None


# A label is written in ASCII digits and nothing else. Python's ``int`` also reads '1_0' (10),
# '+3', ' 3' and other scripts' digits ('٣', 3), none of which a Kaggle file holds: read as
# numbers they would silently train on or score against another class. A leading '-' is matched
# only so that '-1' is reported as out of range rather than as not a number.
_LABEL = re.compile(r"-?[0-9]+")
# Labels are separated by ASCII spaces (Kaggle's format) or tabs; str.split() would also split at
# a no-break or ideographic space, reading '1\u00a03' as two labels.
_TOKEN = re.compile(r"[^ \t]+")


def parse_target(text, where):
    """'16 0' -> [0, 16]; raises DataError for anything that is not a class index 0..27 written
    in ASCII digits, separated by spaces."""
    labels = set()
    for token in _TOKEN.findall(text or ""):
        if not _LABEL.fullmatch(token):
            raise DataError(where, f"label {token!r} is not a number "
                                   f"(a class index in ASCII digits 0..{NUM_CLASSES - 1})")
        value = int(token) if len(token) <= 6 else NUM_CLASSES  # beyond 6 digits: out of range, not converted
        if not 0 <= value < NUM_CLASSES:
            shown = token if len(token) <= 20 else token[:20] + "..."
            raise DataError(where, f"label {shown} outside 0..{NUM_CLASSES - 1}")
        labels.add(value)
    return sorted(labels)


def id_rows(path, required):
    """(where, Id, row) of a CSV keyed by Id: every Id is checked (runtime.ids) and listed once;
    ``where`` is ``"PATH line N"`` for messages about that row."""
    seen = set()
    for line, row in read_rows(path, ("Id", *required)):
        where = f"{path} line {line}"
        sample_id = check_id((row["Id"] or "").strip(), where)
        if sample_id in seen:
            raise DataError(where, f"duplicate Id {sample_id}")
        seen.add(sample_id)
        yield where, sample_id, row


def read_labels(path, column="Target"):
    """{Id: sorted class list} from a ``Id,Target`` CSV (or a submission's ``Id,Predicted`` with
    ``column="Predicted"``), in file order. An empty list of classes is allowed."""
    labels = {sample_id: parse_target(row[column], where) for where, sample_id, row in id_rows(path, (column,))}
    if not labels:
        raise DataError(path, "no rows")
    return labels


def read_ids(path):
    """The Id column of a CSV (a ``sample_submission.csv`` or a labels file), in file order."""
    ids = [sample_id for _, sample_id, _ in id_rows(path, ())]
    if not ids:
        raise DataError(path, "no rows")
    return ids


def read_manifest(path):
    """{Id: sub-folder} from a split manifest (``Id,dir``)."""
    return {sample_id: check_id((row["dir"] or "").strip(), where) for where, sample_id, row in id_rows(path, ("dir",))}


def csv_text(rows):
    """CSV lines ending in '\n' for ``rows``. A row with a carriage return in a field is written
    fully quoted: csv's minimal quoting only quotes the line terminator's own characters, so an Id
    like 'x\r' would otherwise split its row when read back."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if any("\r" in str(field) for field in row) else plain).writerow(row)
    return buf.getvalue()


def multi_hot(label_lists):
    """(N, 28) float32 matrix from a list of class lists."""
    y = np.zeros((len(label_lists), NUM_CLASSES), dtype=np.float32)
    for i, classes in enumerate(label_lists):
        y[i, classes] = 1.0
    return y


def format_target(classes):
    return " ".join(str(int(c)) for c in classes)
