"""`portless admin`: administration of a server's installation (minimal for now).

`portless admin credentials [--data-dir DIR]` prints the path of the
administrator's AWS shared-credentials file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from portless.server.config import default_data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portless admin")
    sub = parser.add_subparsers(dest="command", required=True)
    creds = sub.add_parser("credentials", help="print the administrator's credentials path")
    creds.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "credentials":
        data_dir = (args.data_dir or default_data_dir()).expanduser()
        path = data_dir / "credentials"
        if not path.exists():
            print(f"portless admin: no credentials at {path} (has the server run with this "
                  "data directory?)", file=sys.stderr)
            return 1
        print(path)
        return 0
    return 2  # pragma: no cover
