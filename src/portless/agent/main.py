"""`portless agent register | run | status`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from portless import eventloop
from portless.agent.api import NetworkError
from portless.agent.registration import AlreadyRegistered, register
from portless.agent.state import DEFAULT_STATE_DIR, StateDir, StateError
from portless.aws.errors import AwsError

log = logging.getLogger("portless.agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portless agent",
        description="The portless agent: dials out to a portless server and serves sessions.")
    parser.add_argument("--log-level", default=os.environ.get("PORTLESS_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                       help=f"where the registration is kept (default {DEFAULT_STATE_DIR})")
        p.add_argument("--ca-file", help="PEM bundle of the CA that signed the server's certificate")

    reg = sub.add_parser("register", help="register this machine with an activation")
    reg.add_argument("--endpoint", required=True,
                     help="the portless server URL, e.g. https://portless.example.internal:8443")
    reg.add_argument("--id", required=True, dest="activation_id", help="activation id")
    reg.add_argument("--code", required=True, dest="activation_code", help="activation code")
    reg.add_argument("--region", required=True, help="region, e.g. us-east-1")
    reg.add_argument("--force", action="store_true", help="replace an existing registration")
    common(reg)

    run = sub.add_parser("run", help="run the agent (foreground)")
    common(run)

    status = sub.add_parser("status", help="show the registration")
    common(status)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _error(text: str) -> int:
    print(f"portless agent: error: {text}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.log_level)
    state = StateDir(args.state_dir)
    try:
        if args.command == "register":
            return _register(args, state)
        if args.command == "run":
            return _run(args, state)
        return _status(state)
    except StateError as exc:
        return _error(str(exc))
    except PermissionError as exc:
        return _error(f"{exc.filename or args.state_dir}: permission denied (run as root?)")


def _register(args: argparse.Namespace, state: StateDir) -> int:
    ca_file = os.path.abspath(args.ca_file) if args.ca_file else None
    if ca_file and not os.path.isfile(ca_file):
        return _error(f"CA file {ca_file} does not exist")
    try:
        reg = asyncio.run(register(
            state, endpoint=args.endpoint, activation_id=args.activation_id,
            activation_code=args.activation_code, region=args.region, ca_file=ca_file,
            force=args.force))
    except AlreadyRegistered as exc:
        return _error(str(exc))
    except AwsError as exc:
        return _error(f"registration failed: {exc.code}: {exc.message}")
    except NetworkError as exc:
        return _error(f"cannot reach {args.endpoint}: {exc.__cause__ or exc}")
    print("Successfully registered the instance with portless using Managed instance-id: "
          f"{reg.instance_id}")
    return 0


def _status(state: StateDir) -> int:
    reg = state.load_registration()
    if reg is None:
        print(f"not registered (state directory {state.path})")
        return 1
    print(f"instance id:  {reg.instance_id}")
    print(f"endpoint:     {reg.endpoint}")
    print(f"region:       {reg.region}")
    print(f"fingerprint:  {reg.fingerprint}")
    print(f"key created:  {reg.private_key_created}")
    if reg.ca_file:
        print(f"CA file:      {reg.ca_file}")
    print(f"state dir:    {state.path}")
    return 0


def _run(args: argparse.Namespace, state: StateDir) -> int:
    from portless.agent.runtime import Agent

    reg = state.load_registration()
    if reg is None:
        return _error(f"not registered (state directory {state.path}); "
                      "run `portless agent register` first")
    ca_file = os.path.abspath(args.ca_file) if args.ca_file else None
    lock_fd = state.lock()
    agent = Agent(state, reg, ca_file=ca_file)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("portless agent %s starting (endpoint %s)", reg.instance_id, reg.endpoint)
        await agent.run(stop)

    try:
        eventloop.run(serve())
    except Exception as exc:
        log.exception("agent failed")
        return _error(f"the agent stopped: {type(exc).__name__}: {exc}")
    finally:
        os.close(lock_fd)
    return 0
