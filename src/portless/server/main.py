"""`portless server`: parse the command line, start the server, run until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from portless import eventloop
from portless.loopback import is_loopback
from portless.server.config import ServerConfig, default_data_dir
from portless.server.tls import TlsFiles, ensure_auto_tls

log = logging.getLogger("portless.server")

DEFAULT_LISTEN = "127.0.0.1:8080"


class UsageError(Exception):
    pass


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UsageError(f"--listen wants HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--listen: bad port {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--listen: port {port} out of range")
    return host, port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portless server",
                                description="Run the portless server (SSM API, relay).")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to listen on (default {DEFAULT_LISTEN})")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="state directory (default $PORTLESS_DATA_DIR or "
                        "~/.local/share/portless)")
    p.add_argument("--db-url", default=None,
                   help="database URL (default: SQLite file in the data directory; "
                        "postgresql+asyncpg://… for PostgreSQL)")
    p.add_argument("--region", default="us-east-1", help="region of this endpoint")
    p.add_argument("--tls", choices=["auto"], default=None,
                   help="auto: create a private CA and server certificate in the data dir")
    p.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM)")
    p.add_argument("--tls-key", type=Path, default=None, help="server private key (PEM)")
    p.add_argument("--log-level", default=os.environ.get("PORTLESS_LOG_LEVEL", "INFO"),
                   help="logging level (default INFO)")
    # Tunables, mostly for tests.
    p.add_argument("--minute-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--get-messages-hold", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--start-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    host, port = parse_listen(args.listen)
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    tls: TlsFiles | None = None
    if args.tls == "auto":
        if args.tls_cert or args.tls_key:
            raise UsageError("--tls auto and --tls-cert/--tls-key are exclusive")
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tls = ensure_auto_tls(data_dir, host)
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = TlsFiles(args.tls_cert.expanduser(), args.tls_key.expanduser())
    if tls is None and not is_loopback(host):
        raise UsageError(
            f"refusing to serve plain HTTP on {host}, which is not a loopback address: "
            "access keys and session data would cross the network unencrypted. "
            "Use --tls auto (private CA) or --tls-cert/--tls-key.")
    return ServerConfig(host=host, port=port, data_dir=data_dir, db_url=args.db_url,
                        region=args.region, tls=tls, minute_seconds=args.minute_seconds,
                        get_messages_hold=args.get_messages_hold,
                        start_timeout=args.start_timeout)


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _announce(url: str, config: ServerConfig, created: bool) -> None:
    lines = []
    if created:
        lines.append(f"Created the administrator 'admin'; its access key is in "
                     f"{config.credentials_path}")
    if config.tls is not None and config.tls.ca is not None:
        lines.append(f"TLS certificate authority: {config.tls.ca}")
    lines.append("To use the AWS CLI (aws ssm ...) against this server:")
    lines.append(f"export AWS_SHARED_CREDENTIALS_FILE={config.credentials_path}")
    lines.append("export AWS_PROFILE=portless")
    lines.append(f"export AWS_DEFAULT_REGION={config.region}")
    lines.append(f"export AWS_ENDPOINT_URL={url}")
    if config.tls is not None and config.tls.ca is not None:
        lines.append(f"export AWS_CA_BUNDLE={config.tls.ca}")
    lines.append(f"portless server listening on {url}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


async def _run(config: ServerConfig) -> int:
    from portless.server.app import start_server

    running = await start_server(config)
    _announce(running.url, config, running.boot.admin_created)
    log.info("listening on %s (data in %s)", running.url, config.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.stop()
    return 0


def _run_loop(config: ServerConfig) -> int:
    return eventloop.run(_run(config))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = config_from_args(args)
    except UsageError as exc:
        print(f"portless server: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_loop(config)
    except OSError as exc:
        print(f"portless server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
