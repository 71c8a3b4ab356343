"""Everything a request handler needs, in one object stored on the aiohttp app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from portless.iam.authorizer import Authorizer
from portless.server.auth import Authenticator, Caller
from portless.server.broker import Broker
from portless.server.config import ServerConfig
from portless.server.control import ControlChannels
from portless.server.middleware import REQUEST_ID
from portless.server.recording import RecordingManager
from portless.store import Store


@dataclass(eq=False)
class ServerContext:
    config: ServerConfig
    store: Store
    account_id: str
    authenticator: Authenticator
    authorizer: Authorizer
    control: ControlChannels
    broker: Broker
    recordings: RecordingManager

    @property
    def region(self) -> str:
        return self.config.region


def audit_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    """What every audit event of `request` carries (request id, source IP), plus `extra`."""
    ctx: dict[str, Any] = {"request_id": request.get(REQUEST_ID), "source_ip": request.remote}
    ctx.update(extra)
    return ctx


CONTEXT: web.AppKey[ServerContext] = web.AppKey("portless_context", ServerContext)


@dataclass(eq=False)
class Call:
    """One SSM API call being served."""

    ctx: ServerContext
    request: web.Request
    operation: str
    body: dict[str, Any]
    caller: Caller
    request_id: str
    raw_body: bytes = b""

    @property
    def source_ip(self) -> str | None:
        return self.request.remote

    def audit_context(self, **extra: Any) -> dict[str, Any]:
        return audit_context(self.request, request_id=self.request_id, **extra)

    async def authorize(self, action: str, resource_arn: str | None, *,
                        no_permission_required: bool = False, **extra: Any) -> None:
        """Allow or raise AccessDeniedException; every decision is audited.

        `no_permission_required` is for calls whose signature is the authority (the
        node's RSA-signed calls): evaluated and audited, but never refused.
        """
        await self.ctx.authorizer.authorize(self.caller, action, resource_arn,
                                            self.audit_context(**extra),
                                            no_permission_required=no_permission_required)
