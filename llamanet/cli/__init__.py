"""The ``llamanet`` command.

``llamanet node`` runs the daemon; every other sub-command talks to the daemon of
``--home`` (or ``$LLAMANET_HOME``) through its local API, except ``id``, which
only reads the identity file.  Read commands print tables for people and take
``--json`` for programs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from llamanet.errors import LlamanetError
from llamanet.node.config import default_home

from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home is None:
        args.home = default_home()
    args.home = args.home.expanduser()
    try:
        code = args.func(args)
    except LlamanetError as exc:
        print(f"llamanet: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
