"""``python -m headgen.train COMMAND [options]`` (also the ``headgen-train`` command)."""

from __future__ import annotations

import importlib
import sys

from headgen.errors import did_you_mean
from headgen.train import COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: python -m headgen.train {{{','.join(COMMANDS)}}} [options]  (COMMAND --help for its options)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'{did_you_mean(command, COMMANDS)}\n{usage}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command])
    return module.main(rest, prog=f"python -m headgen.train {command}")


if __name__ == "__main__":
    sys.exit(main())
