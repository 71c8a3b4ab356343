"""The aiohttp application: one port for the SSM API, the MGS endpoints and the WebSockets.

`start_server(config)` opens the store, bootstraps the administrator, wires the
components and starts listening; it is what `portless server` runs and what the
tests use in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass

from aiohttp import web

from portless.iam.authorizer import Authorizer, ensure_admin
from portless.server import api, mgs
from portless.server import ops_documents as _ops_documents  # noqa: F401  (registers ops)
from portless.server import ops_nodes as _ops_nodes  # noqa: F401
from portless.server import ops_sessions as _ops_sessions  # noqa: F401
from portless.server.auth import Authenticator
from portless.server.bootstrap import ADMIN_USER, Bootstrap, bootstrap
from portless.server.broker import Broker
from portless.server.config import MiB, ServerConfig
from portless.server.context import CONTEXT, ServerContext
from portless.server.control import ControlChannels
from portless.server.middleware import aws_errors
from portless.server.recording import RecordingManager
from portless.server.tls import server_ssl_context
from portless.store import SecretBox, SessionStatus, Store

log = logging.getLogger(__name__)

ACTIVE_STATUSES: tuple[SessionStatus, ...] = ("Connecting", "Connected", "Disconnected",
                                              "Terminating")


def build_app(ctx: ServerContext) -> web.Application:
    app = web.Application(middlewares=[aws_errors], client_max_size=8 * MiB)
    app[CONTEXT] = ctx
    app.router.add_post("/", api.handle)
    app.router.add_post("/v1/control-channel/{instance_id}", mgs.create_control_channel)
    app.router.add_get("/v1/control-channel/{instance_id}", mgs.control_channel_ws)
    app.router.add_post("/v1/data-channel/{session_id}", mgs.create_data_channel)
    app.router.add_get("/v1/data-channel/{session_id}", mgs.data_channel_ws)
    return app


async def open_context(config: ServerConfig) -> tuple[ServerContext, Bootstrap]:
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    box = SecretBox.from_file(config.data_dir / "secret.key")
    store = await Store.open(config.resolved_db_url(), secret_box=box)
    try:
        boot = await bootstrap(store, config.credentials_path)
        await ensure_admin(store, ADMIN_USER)
        await _close_interrupted_sessions(store)
    except BaseException:
        await store.close()
        raise
    recordings = RecordingManager(config.recordings_dir)
    control = ControlChannels(store, ping_interval=config.ping_interval,
                              idle_timeout=config.control_idle_timeout,
                              send_timeout=config.control_send_timeout)

    async def send_control(instance_id: str, frame: bytes) -> bool:
        conn = control.connections.get(instance_id)
        return False if conn is None else await conn.send(frame)

    broker = Broker(config, store, recordings, send_control)
    control.on_task_complete = broker.agent_task_complete
    ctx = ServerContext(
        config=config, store=store, account_id=boot.account_id,
        authenticator=Authenticator(store, config.region, boot.account_id),
        authorizer=Authorizer(store, region=config.region, account_id=boot.account_id,
                              background_audit=True),
        control=control, broker=broker, recordings=recordings)
    return ctx, boot


async def purge_expired(store: Store) -> tuple[int, int]:
    """Delete used or expired channel tokens and expired issued credentials."""
    tokens = await store.purge_channel_tokens()
    credentials = await store.delete_expired_credentials()
    if tokens or credentials:
        log.debug("purged %d channel tokens and %d expired credentials", tokens, credentials)
    return tokens, credentials


async def _purge_loop(store: Store, interval: float) -> None:
    while True:
        try:
            await purge_expired(store)
        except Exception:
            log.exception("periodic purge failed")
        await asyncio.sleep(interval)


async def _close_interrupted_sessions(store: Store) -> None:
    """Sessions that were live when the server last stopped cannot continue: close them."""
    while True:
        page = await store.list_sessions("Active", max_results=200)
        changed = 0
        for sess in page.items:
            changed += await store.update_session_status(sess.session_id, "Terminated",
                                                         details="The server restarted.",
                                                         only_if_status_in=ACTIVE_STATUSES)
        if not page.items or not changed:
            return


@dataclass(eq=False)
class RunningServer:
    ctx: ServerContext
    boot: Bootstrap
    runner: web.AppRunner
    host: str
    port: int
    purger: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()     # a wildcard address is no endpoint to give out
        host = f"[{host}]" if ":" in host else host
        return f"{self.ctx.config.scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        ctx = self.ctx
        if self.purger is not None:
            self.purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.purger
            self.purger = None
        await ctx.broker.stop()
        await ctx.control.stop()
        await self.runner.cleanup()
        await ctx.recordings.stop()
        await ctx.authorizer.stop()
        await ctx.store.close()


async def start_server(config: ServerConfig) -> RunningServer:
    ctx, boot = await open_context(config)
    try:
        app = build_app(ctx)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=2.0)
        await runner.setup()
        ssl_ctx: ssl.SSLContext | None = None
        if config.tls is not None:
            ssl_ctx = server_ssl_context(config.tls)
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx,
                           reuse_address=True)
        await site.start()
    except BaseException:
        await ctx.store.close()
        raise
    port = config.port
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        port = int(sockets[0].getsockname()[1])
    ctx.authorizer.start()
    ctx.recordings.start()
    ctx.control.start()
    ctx.broker.start()
    purger = asyncio.get_running_loop().create_task(
        _purge_loop(ctx.store, config.purge_interval), name="purge")
    return RunningServer(ctx, boot, runner, config.host, port, purger)
