"""The toolkit's own small JSON files (an inference journal's settings, a shard's summary, a run's
config, thresholds and history), read as the untrusted input they may be: only a regular file
(runtime.regular: a FIFO never blocks), at most MAX_BYTES (checked before a byte is read), and a
file nested too deeply for Python's json (RecursionError) is one line naming it, like any other
that is not valid JSON. model.json has stricter checks of its own (runtime.model_spec)."""

import json

from runtime.errors import DataError, first_line
from runtime.regular import open_regular

# *Decision*: the largest of these files, a run's history of a long training, is a few hundred
# kilobytes; 64 MiB leaves room for any real one and keeps a hostile one from filling memory.
MAX_BYTES = 64 << 20


def read_json(path):
    """The parsed JSON of ``path``; DataError naming it for a file that is not a regular file, is
    too large, not UTF-8 or not valid JSON (nested too deeply included). A missing file raises
    FileNotFoundError for the caller to word."""
    handle, st = open_regular(path)
    with handle:
        if st.st_size > MAX_BYTES:
            raise DataError(path, f"{st.st_size} bytes, larger than any file of this kind can be "
                                  f"(at most {MAX_BYTES}); not read")
        raw = handle.read(MAX_BYTES + 1)
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise DataError(path, "not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON ({first_line(err)})") from None
