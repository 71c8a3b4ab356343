"""The agent- and client-facing ssmmessages ("MGS") endpoints.

REST (agent spec §7): `POST /v1/control-channel/{instance}` and
`POST /v1/data-channel/{session}` answer 201 with an XML body carrying a
single-use token.  WebSockets (§8, §10.1, §11.1; client spec §3): a GET on the
same paths; the first text frame (OpenControlChannel / OpenDataChannel) carries
the token.  On a data channel the agent is told apart from the client by
`ClientInstanceId` in that frame and the SigV4 `Authorization` on its GET.

Control tokens and the agent's data tokens are issued and accepted only for a
node's own credentials (a user, even an administrator, cannot pose as a node).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from aiohttp import WSMsgType, web

from portless.aws.arn import session_arn
from portless.aws.errors import AwsError, access_denied
from portless.protocol.payloads import ChannelClosed, OpenControlChannel, OpenDataChannel
from portless.server.auth import Caller, signed_request
from portless.server.broker import Side
from portless.server.context import CONTEXT, ServerContext, audit_context
from portless.server.ops_nodes import instance_arn
from portless.server.wsutil import CLOSE_INTERNAL_ERROR, CLOSE_POLICY, close_quietly

log = logging.getLogger(__name__)

SERVICE = frozenset({"ssmmessages"})
FIRST_FRAME_TIMEOUT = 30.0
TERMINATED_TEXT = "Session is already terminated"
NOT_THE_NODE = "only the node itself may open its channels"
BAD_TOKEN = "invalid, expired or already used token"

T = TypeVar("T")
ChannelServer = Callable[
    [ServerContext, web.Request, web.WebSocketResponse, Caller | None, str], Awaitable[None]
]


def _token_xml(root: str, token: str) -> web.Response:
    body = (f"<{root}><MessageSchemaVersion>1.0</MessageSchemaVersion>"
            f"<TokenValue>{escape(token)}</TokenValue></{root}>")
    return web.Response(status=201, text=body, content_type="application/xml")


async def _authenticate(ctx: ServerContext, request: web.Request, body: bytes,
                        action: str) -> Caller:
    try:
        return await ctx.authenticator.authenticate(signed_request(request, body), SERVICE)
    except AwsError as exc:
        ctx.authorizer.deny(None, action, None, exc, audit_context(request))
        raise


def _is_node(caller: Caller | None, instance_id: str | None) -> bool:
    return (caller is not None and caller.kind == "instance" and bool(instance_id)
            and caller.name == instance_id)


def _require_node(ctx: ServerContext, caller: Caller, instance_id: str | None, action: str,
                  arn: str, audit: dict[str, Any]) -> None:
    """AccessDeniedException (audited) unless `caller` is the node `instance_id` itself."""
    if _is_node(caller, instance_id):
        return
    ctx.authorizer.record(caller, action, arn, False, NOT_THE_NODE, audit)
    raise access_denied(caller.arn, action, arn, NOT_THE_NODE)


# ================================================================ REST


async def create_control_channel(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = request.match_info["instance_id"]
    body = await request.read()
    action = "ssmmessages:CreateControlChannel"
    caller = await _authenticate(ctx, request, body, action)
    arn = instance_arn(ctx, instance_id)
    audit = audit_context(request, instance_id=instance_id)
    _require_node(ctx, caller, instance_id, action, arn, audit)
    await ctx.authorizer.authorize(caller, action, arn, audit)
    if await ctx.store.get_instance(instance_id) is None:
        raise AwsError("AccessDeniedException", f"{instance_id} is not a registered node.")
    token = await ctx.store.issue_channel_token("control", instance_id, instance_id=instance_id,
                                                ttl=ctx.config.channel_token_ttl)
    return _token_xml("CreateControlChannelResponse", token)


async def create_data_channel(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session_id = request.match_info["session_id"]
    body = await request.read()
    action = "ssmmessages:CreateDataChannel"
    caller = await _authenticate(ctx, request, body, action)
    arn = str(session_arn(ctx.region, ctx.account_id, session_id))
    relay = ctx.broker.get(session_id)
    if relay is None or relay.ended:
        sess = await ctx.store.get_session(session_id)
        target = sess.target if sess is not None else None
        audit = audit_context(request, session_id=session_id, instance_id=target)
        if target is not None or not caller.is_instance:
            _require_node(ctx, caller, target, action, arn, audit)
        await ctx.authorizer.authorize(caller, action, arn, audit)
        raise AwsError("BadRequestException", f"{TERMINATED_TEXT}: {session_id}", 400)
    target = relay.info.instance_id
    audit = audit_context(request, session_id=session_id, instance_id=target)
    _require_node(ctx, caller, target, action, arn, audit)
    await ctx.authorizer.authorize(caller, action, arn, audit)
    token = await ctx.store.issue_channel_token("data_agent", session_id, instance_id=target,
                                                ttl=ctx.config.channel_token_ttl)
    return _token_xml("CreateDataChannelResponse", token)


# ================================================================ WebSockets


def _new_ws(ctx: ServerContext) -> web.WebSocketResponse:
    return web.WebSocketResponse(max_msg_size=ctx.config.max_frame, compress=False,
                                 autoping=True, heartbeat=None)


async def _first_text(ws: web.WebSocketResponse) -> str | None:
    """The opening text frame (pings are answered meanwhile), or None."""
    try:
        msg = await asyncio.wait_for(ws.receive(), FIRST_FRAME_TIMEOUT)
    except TimeoutError:
        await close_quietly(ws, CLOSE_POLICY, b"no opening frame")
        return None
    if msg.type is WSMsgType.TEXT:
        return str(msg.data)
    if msg.type is WSMsgType.BINARY:
        try:
            return bytes(msg.data).decode("utf-8")
        except UnicodeDecodeError:
            pass
        await close_quietly(ws, CLOSE_POLICY, b"the first frame must be the opening JSON")
    return None


async def _opening(ws: web.WebSocketResponse, parse: Callable[[str], T], name: str) -> T | None:
    """The channel's opening frame parsed by `parse`, or None once the socket is refused."""
    text = await _first_text(ws)
    if text is None:
        await _refuse(ws, f"expected {name}")
        return None
    try:
        return parse(text)
    except ValueError as exc:
        await _refuse(ws, f"bad {name}: {exc}")
        return None


async def _refuse(ws: web.WebSocketResponse, reason: str) -> None:
    await close_quietly(ws, CLOSE_POLICY, reason.encode()[:120])


async def _deny(ctx: ServerContext, ws: web.WebSocketResponse, caller: Caller | None,
                action: str, arn: str, audit: dict[str, Any], reason: str,
                told: str | None = None) -> None:
    """Audit a denied channel open with `reason` and refuse the socket, telling the peer
    `told` (default: the same reason)."""
    ctx.authorizer.record(caller, action, arn, False, reason, audit)
    await _refuse(ws, reason if told is None else told)


async def _authorized(ctx: ServerContext, ws: web.WebSocketResponse, caller: Caller,
                      action: str, arn: str, audit: dict[str, Any]) -> bool:
    """Whether the policies allow `action` (audited by the authorizer); refuses if not."""
    try:
        await ctx.authorizer.authorize(caller, action, arn, audit)
    except AwsError as exc:
        await _refuse(ws, exc.message)
        return False
    return True


async def _optional_caller(ctx: ServerContext, request: web.Request,
                           action: str) -> Caller | None:
    if "Authorization" not in request.headers:
        return None
    return await _authenticate(ctx, request, b"", action)


async def _channel_ws(request: web.Request, action: str,
                      serve: ChannelServer) -> web.WebSocketResponse:
    """Check a signed GET before the upgrade (a bad signature is still an HTTP error), then
    run `serve` on the upgraded socket: an error there can no longer be an HTTP answer, so
    it is logged and the socket closed with 1011."""
    ctx = request.app[CONTEXT]
    caller = await _optional_caller(ctx, request, action)
    ws = _new_ws(ctx)
    await ws.prepare(request)
    try:
        await serve(ctx, request, ws, caller, action)
    except Exception:
        log.exception("%s %s failed after the WebSocket upgrade", request.method, request.path)
        await close_quietly(ws, CLOSE_INTERNAL_ERROR, b"internal error")
    return ws


async def control_channel_ws(request: web.Request) -> web.StreamResponse:
    return await _channel_ws(request, "ssmmessages:OpenControlChannel", _control_channel)


async def _control_channel(ctx: ServerContext, request: web.Request, ws: web.WebSocketResponse,
                           caller: Caller | None, action: str) -> None:
    instance_id = request.match_info["instance_id"]
    opened = await _opening(ws, OpenControlChannel.from_json, "OpenControlChannel")
    if opened is None:
        return
    arn = instance_arn(ctx, instance_id)
    audit = audit_context(request, instance_id=instance_id)
    if not _is_node(caller, instance_id):
        reason = NOT_THE_NODE if caller is not None else "control channel without SigV4"
        return await _deny(ctx, ws, caller, action, arn, audit, reason)
    assert caller is not None
    token = await ctx.store.consume_channel_token(opened.token, kind="control")
    if token is None or token.subject != instance_id:
        return await _deny(ctx, ws, caller, action, arn, audit,
                           "invalid, expired or used token", BAD_TOKEN)
    if await _authorized(ctx, ws, caller, action, arn, audit):
        await ctx.control.serve(instance_id, ws, request, opened)


async def data_channel_ws(request: web.Request) -> web.StreamResponse:
    return await _channel_ws(request, "ssmmessages:OpenDataChannel", _data_channel)


async def _data_channel(ctx: ServerContext, request: web.Request, ws: web.WebSocketResponse,
                        caller: Caller | None, action: str) -> None:
    session_id = request.match_info["session_id"]
    opened = await _opening(ws, OpenDataChannel.from_json, "OpenDataChannel")
    if opened is None:
        return
    is_agent = opened.client_instance_id is not None
    side = Side.AGENT if is_agent else Side.CLIENT
    arn = str(session_arn(ctx.region, ctx.account_id, session_id))
    audit = audit_context(request, session_id=session_id, side=side.name.lower())
    if is_agent and caller is None:
        return await _deny(ctx, ws, None, action, arn, audit, "agent side without SigV4",
                           "the agent's data channel must be SigV4-signed")
    token = await ctx.store.consume_channel_token(
        opened.token, kind="data_agent" if is_agent else "data_client")
    if token is None or token.subject != session_id:
        return await _deny(ctx, ws, caller, action, arn, audit,
                           "invalid, expired or used token", BAD_TOKEN)
    relay = ctx.broker.get(session_id)
    if is_agent:
        assert caller is not None
        instance_id = token.instance_id or ""
        audit["instance_id"] = instance_id
        if not _is_node(caller, instance_id):
            return await _deny(ctx, ws, caller, action, arn, audit, NOT_THE_NODE)
        if opened.client_instance_id != instance_id:
            return await _deny(ctx, ws, caller, action, arn, audit, "ClientInstanceId mismatch",
                               "ClientInstanceId does not match the session's target")
        if not await _authorized(ctx, ws, caller, action, arn, audit):
            return
    else:
        owner = relay.info.owner_arn if relay is not None else f"token-bearer:{session_id}"
        who = caller or Caller("user", owner.rsplit("/", 1)[-1], owner)
        ctx.authorizer.record(who, action, arn, True, "client data-channel token", audit)
    if relay is None or relay.ended:
        if not is_agent:
            frame = ChannelClosed(session_id, token.instance_id or "",
                                  TERMINATED_TEXT).to_message().encode()
            await ws.send_bytes(frame)
        return await _refuse(ws, TERMINATED_TEXT)
    await ctx.broker.attach(relay, side, ws, request)
