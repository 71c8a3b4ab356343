"""The `portless` command: `server` and `agent` run those parts; every other verb is the client's."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "server":
        from portless.server.main import main as server_main

        return server_main(args[1:])
    if args and args[0] == "agent":
        from portless.agent.main import main as agent_main

        return agent_main(args[1:])
    if args and args[0] == "admin":
        from portless.server.admin import main as admin_main

        return admin_main(args[1:])
    from portless.client.cli import main as client_main

    return client_main(args)


if __name__ == "__main__":
    sys.exit(main())
