"""What every command line of the toolkit shares: run one sub-command and turn the errors a user
can cause (bad files, bad options, missing hardware) into one line on stderr and exit code 2.

- ``ArgumentParser``: argparse whose errors are one line (no usage block).
- ``dispatch(parser, commands, argv)``: parse, then run ``commands[args.command]`` under ``guarded``.
- ``guarded(func, *args)``: call ``func``; a user-caused failure prints ``error: <path>: <reason>``
  (runtime.errors.reason_of decides which failures are the user's) and returns 2; Ctrl-C returns
  130 with one line, which offers ``--resume`` only to a command that has it. ``--debug`` (any
  position) or ``HPA_DEBUG=1`` lets the traceback through.
- ``warn(message)``: the one way a command line warns, ``warning: <message>`` on stderr (the shape of
  its error lines); ``setup_logging(level)`` makes logged records read the same (``warning: ...``,
  ``error: ...``; information as it is), in the main process and in worker processes alike.
- ``HelpFormatter``: every option's help ends with its default, unless the help says it already.
- Argument types that refuse nonsense numbers in argparse: ``int_at_least(n)``, ``positive_int``,
  ``non_negative_int``, ``positive_float``, ``non_negative_float``, ``finite_float``,
  ``positive_int_list``, ``finite_float_list``, ``seconds`` (a timing command's time per
  measurement: above 0, at most 600). Every float type refuses nan and inf: no option of the
  toolkit means an infinite value (``--seconds inf`` would time forever).
"""

import argparse
import logging
import math
import os
import sys

from runtime.errors import one_line

DEBUG_ENV = "HPA_DEBUG"


def warn(message):
    """Print ``warning: <message>`` on stderr: how every command line of the toolkit warns (a file
    it names first, as in ``error: <file>: <reason>``)."""
    print(f"warning: {message}", file=sys.stderr)


class _LevelPrefix(logging.Formatter):
    """``warning: <message>`` for a WARNING record, ``error: <message>`` for ERROR and above,
    ``debug: <message>`` for DEBUG; information lines as they are (like the lines commands print)."""

    def format(self, record):
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text if record.levelno >= logging.INFO else f"debug: {text}"


def setup_logging(level=logging.WARNING):
    """Log records of ``level`` and above to stderr in the command lines' style (``_LevelPrefix``).
    Like logging.basicConfig, it leaves a logger that already has handlers alone."""
    handler = logging.StreamHandler()
    handler.setFormatter(_LevelPrefix("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with ``(default: X)`` unless it is required or its help already
    names its default: a flag's is ``off``, a list reads ``1,8,32``; an empty default (None, '')
    means "not given", which only the help can explain, so the help must say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if action.required or not action.option_strings or default is argparse.SUPPRESS or "default" in text:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            shown = "off"
        elif default is None or default == "" or default == () or default == []:
            return text
        else:
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (sub-parsers made by add_subparsers inherit it) and the
    defaults shown in --help (HelpFormatter)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _number(convert, low, strict, what):
    def parse(text):
        try:
            # Python also reads '1_0' and other scripts' digits ('٣'); a number here is ASCII
            if not text.isascii() or "_" in text:
                raise ValueError(text)
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or value in (math.inf, -math.inf):  # nan, inf: a number no option means
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (value < low or (strict and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'above' if strict else 'at least'} {low}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def int_at_least(low):
    return _number(int, low, False, "a whole number")


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = _number(float, 0.0, True, "a number")
non_negative_float = _number(float, 0.0, False, "a number")
finite_float = _number(float, None, False, "a number")
# --seconds (time per measurement) of every timing command: above 0 and at most ten minutes, so a
# typo like 1e9 cannot keep a bench running for years (runtime bench also bounds its whole plan).
MAX_MEASUREMENT_SECONDS = 600.0


def seconds(text):
    value = positive_float(text)
    if value > MAX_MEASUREMENT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_MEASUREMENT_SECONDS:g} seconds per measurement, "
                                         f"got {text}")
    return value


seconds.__name__ = "a number of seconds"


def positive_int_list(text):
    """``1,16,32`` -> [1, 16, 32]: comma-separated whole numbers, each at least 1."""
    return [positive_int(part.strip()) for part in text.split(",")]


positive_int_list.__name__ = "a comma-separated list of whole numbers"


def finite_float_list(text):
    """``0.25,0.5`` -> (0.25, 0.5): comma-separated finite numbers; empty text -> ()."""
    return tuple(finite_float(part.strip()) for part in text.split(",")) if text else ()


finite_float_list.__name__ = "a comma-separated list of numbers"


def debug_requested(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def guarded(func, *args, debug=None, user_errors=(), resumable=False):
    """``func(*args)`` as a command line runs it: its return value is the exit code; user-caused
    errors are one line and exit code 2 (``user_errors``: more exception types whose message is
    already that line, e.g. BackendUnavailable). ``resumable``: the command has ``--resume``, which
    the Ctrl-C line then offers (to no other command: it would refuse the option)."""
    debug = debug_requested() if debug is None else debug
    try:
        return func(*args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted" + ("; run the same command with --resume to continue where it stopped"
                                      if resumable else ""), file=sys.stderr)
        return 130
    except Exception as err:
        line = str(err).replace("\n", "\\n") if isinstance(err, user_errors) else one_line(err)
        if line is None or debug:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2


def dispatch(parser, commands, argv=None, user_errors=(), level=logging.WARNING):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    # Listed for --help only: it is taken out of argv above, so it may stand anywhere on the line
    # and never reaches a command's namespace (train fit turns its namespace into its config).
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"show the traceback of a failure (also {DEBUG_ENV}=1); allowed anywhere on the line")
    args = parser.parse_args([a for a in argv if a != "--debug"])
    setup_logging(level)
    return guarded(commands[args.command], args, debug=debug, user_errors=user_errors,
                   resumable=hasattr(args, "resume"))
