"""The client side of the one executable: push, pull and ls (see their modules)."""

import sys

from cli.ls import ls_command
from cli.pull import pull_command
from cli.push import push_command

COMMANDS = {"push": push_command, "pull": pull_command, "ls": ls_command}
INTERRUPTED = 130  # as a shell reports a command stopped by SIGINT


def client_command(name: str, argv: list[str]) -> int:
    try:
        return COMMANDS[name](argv)
    except KeyboardInterrupt:
        print(f"\nimagestore {name}: interrupted", file=sys.stderr)
        return INTERRUPTED
