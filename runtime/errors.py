"""User-facing errors: one line that names the file and the reason."""


class DataError(Exception):
    """A bad input file or value. ``str(err)`` is the one-line message shown to the user."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
