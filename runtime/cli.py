"""What every command line of the toolkit shares: run one sub-command and turn the errors a user
can cause (bad files, bad options, missing hardware) into one line on stderr and exit code 2."""

import logging
import sys

from runtime.errors import DataError


def dispatch(parser, commands, argv=None, user_errors=(), level=logging.WARNING):
    args = parser.parse_args(argv)
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    try:
        return commands[args.command](args)
    except (DataError, ValueError, *user_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
