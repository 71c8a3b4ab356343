"""Sessions: StartSession, ResumeSession, TerminateSession, DescribeSessions, GetConnectionStatus."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import quote

from portless.aws.arn import session_arn
from portless.aws.awsjson import optional_int, optional_str, require_enum, require_str
from portless.aws.errors import AwsError, validation_error
from portless.protocol.payloads import AgentTaskPayload, ChannelClosed, InteractiveShell
from portless.server.api import operation
from portless.server.broker import SessionInfo
from portless.server.context import Call, ServerContext
from portless.server.documents import PREFERENCES_DOCUMENT, PreparedSession, prepare_session
from portless.server.ops_documents import (
    document_arn_for,
    document_name_from,
    load_preferences,
    load_session_doc,
)
from portless.server.ops_nodes import instance_arn
from portless.store import InvalidNextTokenError, Session, SessionStatus

log = logging.getLogger(__name__)

DOCUMENT_NAME_PATTERN = r"^[a-zA-Z0-9_\-.:/]{3,128}$"
_SID_UNSAFE = re.compile(r"[^\w+=,.@-]")
"""What an IAM name (`[\\w+=,.@-]+`) cannot contain; never put in a session id."""
SESSION_ID_MAX = 96
_SID_SUFFIX = 1 + 17  # "-" and 17 lowercase hex digits
SESSION_FILTER_KEYS = ("InvokedAfter", "InvokedBefore", "Target", "Owner", "Status",
                       "SessionId", "AccessType")
SESSION_STATUSES = ("Connected", "Connecting", "Disconnected", "Terminated", "Terminating",
                    "Failed")
ACTIVE: tuple[SessionStatus, ...] = ("Connecting", "Connected", "Disconnected", "Terminating")


def new_session_id(caller_name: str) -> str:
    """`<caller name>-<17 hex>`, as at AWS (e.g. `rob.berger@informed.iq-qpjr…`).

    The name is kept as it is, so a policy on `session/${aws:username}-*` matches the
    caller's own sessions and no one else's; it is only cut so the id stays within
    SessionId's 96 characters.  (A character outside IAM's name set, which the IAM API
    does not create, becomes `_`: ids never hold `/`, `?`, `#`, `%` or spaces, so they
    are safe in file names, and `stream_url` quotes them for the URL path.)
    """
    prefix = _SID_UNSAFE.sub("_", caller_name)[:SESSION_ID_MAX - _SID_SUFFIX] or "session"
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def stream_url(call: Call, session_id: str) -> str:
    host = call.request.host
    path = quote(session_id, safe="@+=,")  # IAM name characters stay readable
    return f"{call.ctx.config.ws_scheme}://{host}/v1/data-channel/{path}" \
           "?role=publish_subscribe"


async def _client_channel(call: Call, session_id: str, target: str) -> dict[str, Any]:
    """StartSession's and ResumeSession's answer: a fresh single-use token for the client's
    data channel of `session_id` and the URL to open it at."""
    ctx = call.ctx
    token = await ctx.store.issue_channel_token("data_client", session_id, instance_id=target,
                                                ttl=ctx.config.channel_token_ttl)
    return {"SessionId": session_id, "TokenValue": token,
            "StreamUrl": stream_url(call, session_id)}


def _arn(ctx: ServerContext, session_id: str) -> str:
    return str(session_arn(ctx.region, ctx.account_id, session_id))


def _parameters(call: Call) -> dict[str, list[str]]:
    raw = call.body.get("Parameters")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise AwsError("SerializationException", "Expected map for member 'Parameters'")
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        if not 1 <= len(key) <= 255:
            raise validation_error([(key, "parameters", "Map keys must satisfy constraint: "
                                     "[Member must have length less than or equal to 255, "
                                     "Member must have length greater than or equal to 1]")])
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise AwsError("SerializationException",
                           f"Expected list of strings for parameter '{key}'")
        for v in values:
            if len(v) > 65535:
                raise validation_error([(v[:50] + "...", "parameters", "Map value must "
                                         "satisfy constraint: [Member must have length less "
                                         "than or equal to 65535]")])
        out[key] = list(values)
    return out


async def _document_check_requested(call: Call) -> bool:
    """Whether any of the caller's policies uses ssm:SessionDocumentAccessCheck."""
    for policy in await call.ctx.authorizer.policies_for(call.caller):
        for statement in policy.statements:
            if any(c.key.lower() == "ssm:sessiondocumentaccesscheck"
                   for c in statement.conditions):
                return True
    return False


def not_connected(target: str) -> AwsError:
    return AwsError("TargetNotConnected", f"{target} is not connected.")


@operation("StartSession")
async def start_session(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    body = call.body
    target = require_str(body, "Target", 1, 400)
    document_name = optional_str(body, "DocumentName", pattern=DOCUMENT_NAME_PATTERN)
    reason = optional_str(body, "Reason", 1, 256, pattern=r"^.{1,256}$")
    params = _parameters(call)
    name = document_name_from(document_name) if document_name else PREFERENCES_DOCUMENT
    # As at AWS, StartSession needs permission on the target and on the document;
    # the default shell document is checked only when a policy asks for it with
    # ssm:SessionDocumentAccessCheck (so instance-only policies like seed 004's work).
    await call.authorize("ssm:StartSession", instance_arn(ctx, target), target=target,
                         document_name=name)
    if name != PREFERENCES_DOCUMENT or await _document_check_requested(call):
        await call.authorize("ssm:StartSession", document_arn_for(ctx, name), target=target,
                             document_name=name,
                             condition_keys={"ssm:SessionDocumentAccessCheck": "true"})
    doc = await load_session_doc(ctx, name)
    if doc is None:
        raise AwsError("InvalidDocument", f"Document with name {name} does not exist.")
    preferences = await load_preferences(ctx)
    prepared: PreparedSession = prepare_session(name, doc, preferences, params)
    if not ctx.control.is_connected(target):
        raise not_connected(target)

    session_id = new_session_id(call.caller.name)
    run_as = ""
    if prepared.inputs.get("runAsEnabled"):
        run_as = str(call.caller.tags.get("SSMSessionRunAs", ""))
    minute = ctx.config.minute_seconds
    limits = prepared.limits
    info = SessionInfo(
        session_id=session_id, instance_id=target, owner_arn=call.caller.arn,
        document_name=name, session_type=prepared.session_type,
        idle_seconds=limits.idle_minutes * minute,
        max_seconds=limits.max_minutes * minute if limits.max_minutes else None)
    await ctx.store.create_session(
        session_id=session_id, owner_arn=call.caller.arn, owner_name=call.caller.name,
        target=target, document_name=name, reason=reason, parameters=params,
        run_as_user=run_as or None, max_session_duration=limits.max_minutes)
    relay = ctx.broker.open(info)
    task = AgentTaskPayload(session_id=session_id, document_name=name,
                            document_content=prepared.content, parameters=prepared.parameters,
                            run_as_user=run_as, session_owner=call.caller.arn)
    sent = await ctx.control.send(target, InteractiveShell(task).to_message())
    if not sent:
        await ctx.broker.end(relay, "Failed", f"{target} is not connected.", cancel_agent=False)
        raise not_connected(target)
    answer = await _client_channel(call, session_id, target)
    log.info("session %s started by %s on %s (%s)", session_id, call.caller.name, target, name)
    return answer


@operation("ResumeSession")
async def resume_session(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    session_id = require_str(call.body, "SessionId", 1, 96)
    await call.authorize("ssm:ResumeSession", _arn(ctx, session_id), session_id=session_id)
    relay = ctx.broker.get(session_id)
    if relay is None or relay.ended:
        raise AwsError("DoesNotExistException",
                       f"Session with id {session_id} does not exist or is not active.")
    return await _client_channel(call, session_id, relay.info.instance_id)


@operation("TerminateSession")
async def terminate_session(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    session_id = require_str(call.body, "SessionId", 1, 96)
    await call.authorize("ssm:TerminateSession", _arn(ctx, session_id), session_id=session_id)
    if not await ctx.broker.terminate(session_id):
        sess = await ctx.store.get_session(session_id)
        if sess is not None and sess.status in ACTIVE:
            # Not live on this server (e.g. after a restart): record it and tell the agent.
            await ctx.store.update_session_status(session_id, "Terminated",
                                                  only_if_status_in=ACTIVE)
            frame = ChannelClosed(session_id, sess.target).to_message()
            await ctx.control.send(sess.target, frame)
    return {"SessionId": session_id}


def _date_filter(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise AwsError("ValidationException",
                       f"The filter value {value} is not a valid date.") from None


async def _owner_arn(call: Call, value: str) -> str:
    """The Owner filter takes an ARN; a bare user name is accepted too."""
    if value.startswith("arn:"):
        return value
    user = await call.ctx.store.get_user(value)
    return user.arn if user is not None else value


def describe_session(sess: Session) -> dict[str, Any]:
    item: dict[str, Any] = {
        "SessionId": sess.session_id, "Target": sess.target, "Status": sess.status,
        "StartDate": sess.start_date, "DocumentName": sess.document_name,
        "Owner": sess.owner_arn, "AccessType": sess.access_type or "Standard",
        "OutputUrl": {"S3OutputUrl": sess.s3_output_url or "",
                      "CloudWatchOutputUrl": sess.cloudwatch_output_url or ""},
    }
    if sess.end_date is not None:
        item["EndDate"] = sess.end_date
    if sess.reason:
        item["Reason"] = sess.reason
    if sess.details:
        item["Details"] = sess.details
    if sess.max_session_duration:
        item["MaxSessionDuration"] = str(sess.max_session_duration)
    return item


@operation("DescribeSessions")
async def describe_sessions(call: Call) -> dict[str, Any]:
    body = call.body
    state = require_enum(body, "State", ("Active", "History"))
    max_results = optional_int(body, "MaxResults", 1, 200)
    next_token = optional_str(body, "NextToken")
    filters = body.get("Filters")
    criteria: dict[str, Any] = {}
    if filters is not None:
        if not isinstance(filters, list):
            raise AwsError("SerializationException", "Expected list for member 'Filters'")
        if not 1 <= len(filters) <= 6:
            raise validation_error([(filters, "filters", "Member must have length less than "
                                     "or equal to 6")])
        for i, f in enumerate(filters, start=1):
            if not isinstance(f, dict):
                raise AwsError("SerializationException", "Expected structure in 'Filters'")
            key = f.get("key")
            if key not in SESSION_FILTER_KEYS:
                raise AwsError("InvalidFilterKey", f"The filter key {key} is not valid.")
            value = require_str(f, "value", 1, 400, target=f"filters.{i}.member.value")
            if key == "InvokedAfter":
                criteria["invoked_after"] = _date_filter(value)
            elif key == "InvokedBefore":
                criteria["invoked_before"] = _date_filter(value)
            elif key == "Target":
                criteria["target"] = value
            elif key == "Owner":
                criteria["owner"] = await _owner_arn(call, value)
            elif key == "Status":
                if value not in SESSION_STATUSES:
                    raise AwsError("ValidationException",
                                   f"The filter value {value} is not a valid session status.")
                criteria["status"] = value
            elif key == "SessionId":
                criteria["session_id"] = value
            else:
                criteria["access_type"] = value
    await call.authorize("ssm:DescribeSessions", None)
    try:
        page = await call.ctx.store.list_sessions(
            state,  # type: ignore[arg-type]
            max_results=max_results or 20, next_token=next_token, **criteria)
    except InvalidNextTokenError:
        raise AwsError("InvalidNextToken", "The specified token is not valid.") from None
    out: dict[str, Any] = {"Sessions": [describe_session(s) for s in page.items]}
    if page.next_token:
        out["NextToken"] = page.next_token
    return out


@operation("GetConnectionStatus")
async def get_connection_status(call: Call) -> dict[str, Any]:
    target = require_str(call.body, "Target", 1, 400)
    await call.authorize("ssm:GetConnectionStatus", instance_arn(call.ctx, target),
                         target=target)
    connected = call.ctx.control.is_connected(target)
    return {"Target": target, "Status": "connected" if connected else "notconnected"}
