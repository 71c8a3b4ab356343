"""The agent- and client-facing ssmmessages ("MGS") endpoints.

REST (agent spec §7): `POST /v1/control-channel/{instance}` and
`POST /v1/data-channel/{session}` answer 201 with an XML body carrying a
single-use token.  WebSockets (§8, §10.1, §11.1; client spec §3): a GET on the
same paths; the first text frame (OpenControlChannel / OpenDataChannel) carries
the token.  On a data channel the agent is told apart from the client by
`ClientInstanceId` in that frame and the SigV4 `Authorization` on its GET.
"""

from __future__ import annotations

import asyncio
import logging
from xml.sax.saxutils import escape

from aiohttp import WSMsgType, web

from portless.aws.arn import session_arn
from portless.aws.errors import AwsError
from portless.protocol.payloads import ChannelClosed, OpenControlChannel, OpenDataChannel
from portless.server.auth import Caller, signed_request
from portless.server.broker import CLOSE_POLICY, Side
from portless.server.context import CONTEXT, ServerContext
from portless.server.middleware import REQUEST_ID
from portless.server.ops_nodes import instance_arn

log = logging.getLogger(__name__)

SERVICE = frozenset({"ssmmessages"})
FIRST_FRAME_TIMEOUT = 30.0
TERMINATED_TEXT = "Session is already terminated"


def _token_xml(root: str, token: str) -> web.Response:
    body = (f"<{root}><MessageSchemaVersion>1.0</MessageSchemaVersion>"
            f"<TokenValue>{escape(token)}</TokenValue></{root}>")
    return web.Response(status=201, text=body, content_type="application/xml")


def _audit(request: web.Request, **extra: object) -> dict[str, object]:
    ctx: dict[str, object] = {"request_id": request.get(REQUEST_ID),
                              "source_ip": request.remote}
    ctx.update(extra)
    return ctx


async def _authenticate(ctx: ServerContext, request: web.Request, body: bytes,
                        action: str) -> Caller:
    try:
        return await ctx.authenticator.authenticate(signed_request(request, body), SERVICE)
    except AwsError as exc:
        ctx.authorizer.deny(None, action, None, exc, _audit(request))
        raise


# ================================================================ REST


async def create_control_channel(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    instance_id = request.match_info["instance_id"]
    body = await request.read()
    action = "ssmmessages:CreateControlChannel"
    caller = await _authenticate(ctx, request, body, action)
    await ctx.authorizer.authorize(caller, action, instance_arn(ctx, instance_id),
                                   _audit(request, instance_id=instance_id))
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
        await ctx.authorizer.authorize(caller, action, arn,
                                       _audit(request, session_id=session_id,
                                              instance_id=target))
        raise AwsError("BadRequestException", f"{TERMINATED_TEXT}: {session_id}", 400)
    await ctx.authorizer.authorize(caller, action, arn,
                                   _audit(request, session_id=session_id,
                                          instance_id=relay.info.instance_id))
    token = await ctx.store.issue_channel_token("data_agent", session_id,
                                                instance_id=relay.info.instance_id,
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
        await ws.close(code=CLOSE_POLICY, message=b"no opening frame")
        return None
    if msg.type is WSMsgType.TEXT:
        return str(msg.data)
    if msg.type is WSMsgType.BINARY:
        try:
            return bytes(msg.data).decode("utf-8")
        except UnicodeDecodeError:
            pass
        await ws.close(code=CLOSE_POLICY, message=b"the first frame must be the opening JSON")
    return None


async def _refuse(ws: web.WebSocketResponse, reason: str) -> web.WebSocketResponse:
    if not ws.closed:
        await ws.close(code=CLOSE_POLICY, message=reason.encode()[:120])
    return ws


async def _optional_caller(ctx: ServerContext, request: web.Request,
                           action: str) -> Caller | None:
    if "Authorization" not in request.headers:
        return None
    return await _authenticate(ctx, request, b"", action)


async def control_channel_ws(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    instance_id = request.match_info["instance_id"]
    action = "ssmmessages:OpenControlChannel"
    caller = await _optional_caller(ctx, request, action)
    ws = _new_ws(ctx)
    await ws.prepare(request)
    text = await _first_text(ws)
    if text is None:
        return await _refuse(ws, "expected OpenControlChannel")
    try:
        opened = OpenControlChannel.from_json(text)
    except ValueError as exc:
        return await _refuse(ws, f"bad OpenControlChannel: {exc}")
    token = await ctx.store.consume_channel_token(opened.token, kind="control")
    arn = instance_arn(ctx, instance_id)
    if token is None or token.subject != instance_id:
        ctx.authorizer.record(caller, action, arn, False, "invalid, expired or used token",
                              _audit(request, instance_id=instance_id))
        return await _refuse(ws, "invalid, expired or already used token")
    who = caller or Caller("instance", instance_id, arn)
    try:
        await ctx.authorizer.authorize(who, action, arn, _audit(request, instance_id=instance_id))
    except AwsError as exc:
        return await _refuse(ws, exc.message)
    await ctx.control.serve(instance_id, ws, request, opened)
    return ws


async def data_channel_ws(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    session_id = request.match_info["session_id"]
    action = "ssmmessages:OpenDataChannel"
    caller = await _optional_caller(ctx, request, action)
    ws = _new_ws(ctx)
    await ws.prepare(request)
    text = await _first_text(ws)
    if text is None:
        return await _refuse(ws, "expected OpenDataChannel")
    try:
        opened = OpenDataChannel.from_json(text)
    except ValueError as exc:
        return await _refuse(ws, f"bad OpenDataChannel: {exc}")
    is_agent = opened.client_instance_id is not None
    side = Side.AGENT if is_agent else Side.CLIENT
    arn = str(session_arn(ctx.region, ctx.account_id, session_id))
    audit = _audit(request, session_id=session_id, side=side.name.lower())
    if is_agent and caller is None:
        ctx.authorizer.record(None, action, arn, False, "agent side without SigV4", audit)
        return await _refuse(ws, "the agent's data channel must be SigV4-signed")
    token = await ctx.store.consume_channel_token(
        opened.token, kind="data_agent" if is_agent else "data_client")
    if token is None or token.subject != session_id:
        ctx.authorizer.record(caller, action, arn, False, "invalid, expired or used token",
                              audit)
        return await _refuse(ws, "invalid, expired or already used token")
    relay = ctx.broker.get(session_id)
    if is_agent:
        instance_id = token.instance_id or ""
        if opened.client_instance_id != instance_id:
            ctx.authorizer.record(caller, action, arn, False, "ClientInstanceId mismatch",
                                  audit)
            return await _refuse(ws, "ClientInstanceId does not match the session's target")
        assert caller is not None
        try:
            await ctx.authorizer.authorize(caller, action, arn,
                                           {**audit, "instance_id": instance_id})
        except AwsError as exc:
            return await _refuse(ws, exc.message)
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
    return ws
