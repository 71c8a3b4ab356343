"""`POST /`: the awsJson1.1 dispatcher (AmazonSSM, ec2messages, kms) and the IAM/STS door.

Operations register themselves with :func:`operation`; each says how its
caller authenticates: SigV4 (the default), anonymously (RegisterManagedInstance)
or with the agent's RSA-signed SigV4 variant (RequestManagedInstanceRoleToken).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from portless.aws.arn import managed_instance_arn
from portless.aws.awsjson import CONTENT_TYPE, json_dumps, parse_body
from portless.aws.errors import AwsError, unknown_operation, unrecognized_client
from portless.aws.rsa_signature import verify_rsa
from portless.aws.sigv4 import parse_authorization
from portless.iam.http import handle_query_request, is_query_request
from portless.server.auth import ANONYMOUS, Caller, signed_request
from portless.server.context import CONTEXT, Call, ServerContext, audit_context
from portless.server.middleware import REQUEST_ID

log = logging.getLogger(__name__)

AuthMode = Literal["sigv4", "anonymous", "rsa"]
Handler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    handler: Handler
    auth: AuthMode


# prefix → (signing service, operations)
_SERVICES: dict[str, tuple[str, dict[str, Operation]]] = {
    "AmazonSSM": ("ssm", {}),
    "EC2WindowsMessageDeliveryService": ("ec2messages", {}),
    "TrentService": ("kms", {}),
}


def operation(name: str, *, prefix: str = "AmazonSSM",
              auth: AuthMode = "sigv4") -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _SERVICES[prefix][1][name] = Operation(name, fn, auth)
        return fn
    return register


def json_response(obj: dict[str, Any], request_id: str, status: int = 200) -> web.Response:
    return web.Response(body=json_dumps(obj), status=status,
                        headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id})


def _resolve(target: str | None) -> tuple[str, str, Operation]:
    if not target:
        raise unknown_operation()
    prefix, sep, name = target.strip().rpartition(".")
    if not sep or prefix not in _SERVICES:
        raise unknown_operation(f"Unknown operation {target}")
    service, ops = _SERVICES[prefix]
    op = ops.get(name)
    if op is None:
        raise unknown_operation(f"Unknown operation {target}")
    return prefix, service, op


async def _authenticate_rsa(call_request: web.Request, body: bytes,
                            ctx: ServerContext) -> Caller:
    req = signed_request(call_request, body)
    auth = parse_authorization(req.header_map.get("authorization"))
    instance = await ctx.store.get_instance(auth.access_key_id)
    key_text = instance.public_key if instance is not None else None
    if key_text is None:
        raise unrecognized_client()
    instance_id = verify_rsa(req, key_text, now=datetime.now(UTC), expected_region=ctx.region)
    arn = str(managed_instance_arn(ctx.region, ctx.account_id, instance_id))
    return Caller("instance", instance_id, arn)


async def handle(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    request_id: str = request[REQUEST_ID]
    target = request.headers.get("X-Amz-Target")
    raw = await request.read()
    if target is None and is_query_request(request.headers.get("Content-Type", ""), raw):
        # IAM and STS speak the query protocol (form body, XML answers) on the same path.
        return await handle_query_request(
            request, store=ctx.store, authorizer=ctx.authorizer,
            authenticate=ctx.authenticator.authenticate, request_id=request_id,
            account_id=ctx.account_id, body=raw)
    _prefix, service, op = _resolve(target)
    action = f"{service}:{op.name}"
    audit = audit_context(request, request_id=request_id)
    try:
        if op.auth == "sigv4":
            caller = await ctx.authenticator.authenticate(signed_request(request, raw),
                                                          frozenset({service}))
        elif op.auth == "rsa":
            caller = await _authenticate_rsa(request, raw, ctx)
        else:
            caller = ANONYMOUS
    except AwsError as exc:
        ctx.authorizer.deny(None, action, None, exc, audit)
        raise
    body = parse_body(raw)
    call = Call(ctx, request, op.name, body, caller, request_id, raw)
    result = await op.handler(call)
    return json_response(result, request_id)
