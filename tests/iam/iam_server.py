"""A loopback aiohttp server speaking IAM and STS (query protocol), in a background thread.

It is wired the way the portless server wires these endpoints: ``POST /`` with a form body,
SigV4 verified against the store's keys (:func:`portless.iam.principal.authenticate`),
then :func:`portless.iam.http.handle_query_request`. Tests drive it with boto3.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
from aiohttp import web
from botocore.config import Config

from portless.aws.sigv4 import SignedRequest
from portless.iam.authorizer import Authorizer, ensure_admin
from portless.iam.http import handle_query_request
from portless.iam.principal import Principal, authenticate
from portless.store import SecretBox, Store

T = TypeVar("T")
REGION = "us-east-1"
ACCOUNT = "123456789012"
ADMIN = "admin"


@dataclass
class IamServer:
    data_dir: Path
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None
    store: Store | None = None
    authorizer: Authorizer | None = None
    runner: web.AppRunner | None = None
    port: int = 0
    admin_key: tuple[str, str] = ("", "")
    _clients: dict[tuple[str, ...], Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> IamServer:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="iam")
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.store = await Store.open(
            f"sqlite+aiosqlite:///{self.data_dir / 'iam.db'}",
            secret_box=SecretBox.from_file(self.data_dir / "secret.key"),
        )
        await self.store.create_user(ADMIN, arn=f"arn:aws:iam::{ACCOUNT}:user/{ADMIN}")
        await ensure_admin(self.store, ADMIN)
        made = await self.store.create_access_key(ADMIN)
        self.admin_key = (made.key.access_key_id, made.secret_access_key)
        self.authorizer = Authorizer(self.store, region=REGION, account_id=ACCOUNT)
        store, authorizer = self.store, self.authorizer

        async def auth(signed: SignedRequest, services: frozenset[str]) -> Principal:
            return await authenticate(
                store, signed, services=services, region=REGION, account_id=ACCOUNT
            )

        async def handle(request: web.Request) -> web.StreamResponse:
            return await handle_query_request(
                request,
                store=store,
                authorizer=authorizer,
                authenticate=auth,
                request_id=str(uuid.uuid4()),
                account_id=ACCOUNT,
            )

        app = web.Application()
        app.router.add_post("/", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = getattr(site, "_server", None)
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def _stop() -> None:
            if self.runner is not None:
                await self.runner.cleanup()
            if self.authorizer is not None:
                await self.authorizer.stop()
            if self.store is not None:
                await self.store.close()

        self.run(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        self.loop.close()

    # ---------------------------------------------------------------- clients

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def st(self) -> Store:
        assert self.store is not None
        return self.store

    def client(
        self,
        service: str,
        key: tuple[str, str] | None = None,
        token: str | None = None,
        *,
        validate: bool = True,
    ) -> Any:
        """A boto3 client; *validate* False skips botocore's own parameter checks, so the
        server's validation is what answers."""
        akid, secret = key or self.admin_key
        cache_key = (service, akid, secret, token or "", str(validate))
        found = self._clients.get(cache_key)
        if found is None:
            cfg = Config(
                retries={"max_attempts": 1}, read_timeout=30, parameter_validation=validate
            )
            found = boto3.client(
                service,
                endpoint_url=self.url,
                region_name=REGION,
                aws_access_key_id=akid,
                aws_secret_access_key=secret,
                aws_session_token=token,
                config=cfg,
            )
            self._clients[cache_key] = found
        return found

    def iam(self, key: tuple[str, str] | None = None, token: str | None = None) -> Any:
        return self.client("iam", key, token)

    def sts(self, key: tuple[str, str] | None = None, token: str | None = None) -> Any:
        return self.client("sts", key, token)

    def new_user(self, name: str, *policies: str) -> tuple[str, str]:
        """Create *name* with a key (and the given AWS/customer managed policies attached)."""
        iam = self.iam()
        iam.create_user(UserName=name)
        for arn in policies:
            iam.attach_user_policy(UserName=name, PolicyArn=arn)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]
