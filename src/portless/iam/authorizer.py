"""The authorizer: who may do what, decided from the store on every call and audited.

For each request the :class:`Authorizer` reads the caller's effective identity policies
from the store (nothing is cached between requests, so an inline policy changed, a policy
detached or a user removed from a group counts from the very next call):

* a user: their inline policies and attached managed policies, then for each of their
  groups the group's inline and attached policies;
* a node (``instance`` credentials): the inline and attached policies of its activation's
  IAM role, or ``AmazonSSMManagedInstanceCore`` when that role has none; a node may in any
  case only act on itself;
* the anonymous caller: only ``ssm:RegisterManagedInstance`` (the activation code is its
  proof).

It builds the :class:`~portless.iam.context.RequestContext` (``aws:username``,
``aws:userid``, ``aws:PrincipalTag/*`` from the user's current tags, ``aws:SourceIp``,
``aws:CurrentTime``/``aws:EpochTime``, ``aws:SecureTransport``,
``aws:MultiFactorAuthPresent``/``Age`` from the temporary credential, ``ssm:resourceTag/*``
from the target node's tags), evaluates, writes one audit event per decision and returns
the :class:`~portless.iam.evaluation.Decision`.

The server uses it through ``authorize(caller, action, resource_arn, context)`` (raising
AccessDeniedException on deny), ``record`` and ``deny`` (audit a decision taken elsewhere),
and ``start``/``stop``/``flush`` for the background audit writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from portless.aws.arn import Arn
from portless.aws.errors import AwsError
from portless.iam.context import ContextValue, RequestContext
from portless.iam.evaluation import Decision, evaluate
from portless.iam.managed import (
    ADMINISTRATOR_ACCESS,
    AMAZON_SSM_MANAGED_INSTANCE_CORE,
    ManagedPolicy,
    get_managed_policy,
)
from portless.iam.policy import MalformedPolicyDocument, Policy, parse_policy
from portless.iam.principal import Caller, Principal
from portless.store import NotFoundError, Store
from portless.store.iam import PolicySource

__all__ = [
    "ANONYMOUS_ACTIONS",
    "NODE_SELF_SCOPED_ACTIONS",
    "AuthorizeFn",
    "Authorizer",
    "BoundAuthorizer",
    "access_denied_error",
    "ensure_admin",
]

log = logging.getLogger(__name__)

ANONYMOUS_ACTIONS = frozenset({"ssm:RegisterManagedInstance"})
"""What an unauthenticated caller may attempt (it proves itself with an activation code)."""

NODE_SELF_SCOPED_ACTIONS = frozenset(
    {
        "ssm:UpdateInstanceInformation",
        "ssm:ListInstanceAssociations",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenDataChannel",
        "ec2messages:GetMessages",
    }
)
"""Node actions whose ``instance_id`` context must be the node itself."""

_INSTANCE_RESOURCE_TYPES = ("managed-instance", "instance")

# Context keys the server passes that are request facts rather than audit details.
_REQUEST_KEYS = frozenset(
    {"request_id", "source_ip", "secure_transport", "resource_tags", "condition_keys"}
)


def access_denied_error(
    decision: Decision,
    principal_arn: str,
    action: str,
    resource: str | None = None,
    *,
    code: str = "AccessDeniedException",
    status: int | None = None,
) -> AwsError:
    """The error a denied call answers, worded as AWS words it.

    ``User: ARN is not authorized to perform: ACTION on resource: RES because no
    identity-based policy allows the ACTION action`` for an implicit deny, ``… with an
    explicit deny in an identity-based policy`` for an explicit one. The awsJson services
    use ``AccessDeniedException`` (400); IAM and STS use ``code="AccessDenied"``,
    ``status=403``.
    """
    message = f"User: {principal_arn} is not authorized to perform: {action}"
    if resource and resource != "*":
        message += f" on resource: {resource}"
    if decision.reason == "explicit deny":
        message += " with an explicit deny in an identity-based policy"
    else:
        message += f" because no identity-based policy allows the {action} action"
    return AwsError(code, message, status)


# --------------------------------------------------------------------------- policy cache


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str) -> Policy | None:
    """Parse a stored document once per distinct text (content-addressed: never stale)."""
    try:
        return parse_policy(text, max_chars=None)
    except MalformedPolicyDocument as exc:  # stored documents were validated on the way in
        log.error("ignoring a stored policy that no longer parses: %s", exc.message)
        return None


@functools.lru_cache(maxsize=64)
def _aws_managed(arn: str) -> Policy | None:
    found = get_managed_policy(arn)
    return found.policy() if found is not None else None


@dataclass(frozen=True, slots=True)
class _Resolved:
    """The caller's policies, and for each policy (by identity) where it came from."""

    policies: list[Policy]
    origins: dict[int, str]
    principal_tags: dict[str, str]
    user_id: str | None
    username: str | None
    note: str | None = None  # a reason to deny before evaluation (node acting for another)


# --------------------------------------------------------------------------- binding


class AuthorizeFn(Protocol):
    """What the IAM/STS handlers call: authorize one action on one resource for the bound
    caller and request, returning the decision (audited; the handler raises on deny)."""

    async def __call__(
        self,
        action: str,
        resource: str,
        *,
        condition_keys: Mapping[str, ContextValue] | None = None,
        no_permission_required: bool = False,
    ) -> Decision: ...

    async def record(self, action: str, resource: str, allowed: bool, reason: str) -> None:
        """Audit an outcome decided outside policy evaluation (e.g. a refused MFA code)."""
        ...


@dataclass(frozen=True, slots=True)
class BoundAuthorizer:
    """An :class:`Authorizer` bound to one caller and one request (an :class:`AuthorizeFn`)."""

    authorizer: Authorizer
    caller: Principal
    source_ip: str | None = None
    secure_transport: bool | None = None
    request_id: str | None = None

    async def __call__(
        self,
        action: str,
        resource: str,
        *,
        condition_keys: Mapping[str, ContextValue] | None = None,
        no_permission_required: bool = False,
    ) -> Decision:
        return await self.authorizer.decide(
            self.caller,
            action,
            resource,
            source_ip=self.source_ip,
            secure_transport=self.secure_transport,
            request_id=self.request_id,
            condition_keys=condition_keys,
            no_permission_required=no_permission_required,
        )

    async def record(self, action: str, resource: str, allowed: bool, reason: str) -> None:
        await self.authorizer.write_event(
            self.caller,
            action,
            resource,
            allowed,
            reason,
            request_id=self.request_id,
            source_ip=self.source_ip,
        )


# --------------------------------------------------------------------------- the authorizer


class Authorizer:
    """Decides every call from the store's current identities and policies; audits each.

    *background_audit*: write audit events from a queue drained by a task (started by
    :meth:`start`) instead of inside the request; the server may prefer this for latency.
    Without it (the default) :meth:`decide` returns only once its event is written.
    """

    def __init__(
        self,
        store: Store,
        *,
        region: str = "us-east-1",
        account_id: str | None = None,
        background_audit: bool = False,
        clock: Any = None,
        queue_limit: int = 100_000,
    ) -> None:
        self.store = store
        self.region = region
        self.account_id = account_id
        self.background_audit = background_audit
        self._clock = clock or time.time
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_limit)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ policies

    async def _user_policies(self, caller: Principal) -> _Resolved:
        loaded = await self.store.load_user_authorization(caller.name)
        if loaded is None:
            return _Resolved([], {}, {}, None, None, "the user no longer exists")
        policies, origins = self._materialize(loaded.sources)
        return _Resolved(
            policies,
            origins,
            {str(k): str(v) for k, v in loaded.user.tags.items()},
            loaded.user.user_id,
            loaded.user.name,
        )

    async def _node_policies(self, caller: Principal) -> _Resolved:
        instance = await self.store.get_instance(caller.name)
        if instance is None:
            return _Resolved([], {}, {}, None, None, "the node is no longer registered")
        role = instance.iam_role
        sources: list[PolicySource] = []
        if role:
            sources = (await self.store.load_role_authorization(role)).sources
        if not sources:
            core = AMAZON_SSM_MANAGED_INSTANCE_CORE
            sources = [PolicySource("managed", core.name, None, core.arn, f"role/{role}")]
        policies, origins = self._materialize(sources)
        return _Resolved(policies, origins, {}, None, None)

    @staticmethod
    def _materialize(sources: Sequence[PolicySource]) -> tuple[list[Policy], dict[int, str]]:
        policies: list[Policy] = []
        origins: dict[int, str] = {}
        for src in sources:
            if src.kind == "managed" and src.document is None:
                base = _aws_managed(src.arn or "")
            else:
                base = _parse_cached(src.document or "")
            if base is None:
                continue
            policy = dataclasses.replace(base, name=src.name, arn=src.arn)
            policies.append(policy)
            origins[id(policy)] = src.via
        return policies, origins

    async def policies_for(self, caller: Principal) -> list[Policy]:
        """The caller's effective identity policies as of now."""
        if caller.kind == "user":
            return (await self._user_policies(caller)).policies
        if caller.kind == "instance":
            return (await self._node_policies(caller)).policies
        return []

    # ------------------------------------------------------------------ context

    async def _mfa(self, caller: Principal, now: float) -> tuple[bool | None, int | None]:
        if caller.kind != "user":
            return None, None
        if isinstance(caller, Caller):
            temporary, at = caller.temporary, caller.mfa_authenticated_at
        else:
            temporary = caller.access_key_id.startswith("ASIA")
            at = None
            if temporary:
                mfa = await self.store.get_credential_mfa(caller.access_key_id)
                at = mfa.authenticated_at if mfa is not None else None
        if not temporary:
            return None, None  # long-term keys: AWS leaves the keys out altogether
        if at is None:
            return False, None
        return True, max(0, int(now - at))

    async def _resource_tags(self, resource: str) -> dict[str, str] | None:
        try:
            arn = Arn.parse(resource)
        except ValueError:
            return None
        if arn.resource_type not in _INSTANCE_RESOURCE_TYPES or "*" in arn.resource_id:
            return None
        return await self.store.list_instance_tags(arn.resource_id)

    @staticmethod
    def _instance_of(resource: str) -> str | None:
        try:
            arn = Arn.parse(resource)
        except ValueError:
            return None
        if arn.resource_type in _INSTANCE_RESOURCE_TYPES:
            return arn.resource_id
        return None

    # ------------------------------------------------------------------ deciding

    async def decide(
        self,
        caller: Principal | None,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        source_ip: str | None = None,
        secure_transport: bool | None = None,
        request_id: str | None = None,
        resource_tags: Mapping[str, str] | None = None,
        condition_keys: Mapping[str, ContextValue] | None = None,
        no_permission_required: bool = False,
        now: float | None = None,
    ) -> Decision:
        """Decide (and audit) *caller* doing *action* on *resource* (``*`` if None).

        *context* is the server's per-call mapping: ``request_id``, ``source_ip``,
        ``secure_transport``, ``resource_tags``, ``condition_keys`` are request facts, any
        other entry (``instance_id``, ``target``, ``document_name`` …) is recorded in the
        audit event's details; ``instance_id`` also scopes node self-actions. Keyword
        arguments override the mapping. *resource_tags* default to the node's tags when the
        resource is a node ARN. *no_permission_required* (GetCallerIdentity and
        GetSessionToken) records the evaluation but always allows.
        """
        ctx_map: Mapping[str, Any] = context or {}
        source_ip = source_ip if source_ip is not None else ctx_map.get("source_ip")
        if secure_transport is None:
            secure_transport = ctx_map.get("secure_transport")
        request_id = request_id if request_id is not None else ctx_map.get("request_id")
        if resource_tags is None:
            resource_tags = ctx_map.get("resource_tags")
        if condition_keys is None:
            condition_keys = ctx_map.get("condition_keys")
        details: dict[str, Any] = {
            k: v for k, v in ctx_map.items() if k not in _REQUEST_KEYS and v is not None
        }
        resource_arn = resource or "*"
        moment = self._clock() if now is None else now

        decision, origin, mfa_present = await self._evaluate(
            caller,
            action,
            resource_arn,
            ctx_map,
            source_ip=source_ip,
            secure_transport=secure_transport,
            resource_tags=resource_tags,
            condition_keys=condition_keys,
            now=moment,
            details=details,
        )
        reason = decision.describe()
        if no_permission_required and not decision.allowed:
            reason = f"allowed: no permission required ({reason})"
            decision = Decision(allowed=True, reason="allowed")
        if origin is not None:
            details["policy_source"] = origin
        if decision.policy_arn:
            details["policy_arn"] = decision.policy_arn
        if decision.statement_index is not None:
            details["statement_index"] = decision.statement_index
        if decision.sid:
            details["sid"] = decision.sid
        if mfa_present is not None:
            details["mfa"] = mfa_present
        await self.write_event(caller, action, resource_arn, decision.allowed, reason,
                               request_id=request_id, source_ip=source_ip, details=details,
                               now=moment)
        return decision

    async def _evaluate(
        self,
        caller: Principal | None,
        action: str,
        resource: str,
        ctx_map: Mapping[str, Any],
        *,
        source_ip: str | None,
        secure_transport: bool | None,
        resource_tags: Mapping[str, str] | None,
        condition_keys: Mapping[str, ContextValue] | None,
        now: float,
        details: dict[str, Any],
    ) -> tuple[Decision, str | None, bool | None]:
        kind = caller.kind if caller is not None else "anonymous"
        if caller is None or kind not in ("user", "instance"):
            if action in ANONYMOUS_ACTIONS:
                return Decision(True, "allowed", policy_name="activation code"), None, None
            details["note"] = "the request is not authenticated"
            return Decision(False, "implicit deny"), None, None

        if kind == "instance":
            resolved = await self._node_policies(caller)
            target = ctx_map.get("instance_id") or self._instance_of(resource)
            if (
                target
                and str(target) != caller.name
                and (action in NODE_SELF_SCOPED_ACTIONS or self._instance_of(resource) is not None)
            ):
                details["note"] = f"{caller.name} may only act for itself"
                return Decision(False, "implicit deny"), None, None
        else:
            resolved = await self._user_policies(caller)
        if resolved.note is not None:
            details["note"] = resolved.note
            return Decision(False, "implicit deny"), None, None

        mfa_present, mfa_age = await self._mfa(caller, now)
        if resource_tags is None:
            resource_tags = await self._resource_tags(resource)
        extra: dict[str, ContextValue] = {}
        if kind == "instance":
            extra["ssm:SourceInstanceARN"] = caller.arn
            extra["aws:PrincipalType"] = "AssumedRole"
        else:
            extra["aws:PrincipalType"] = "User"
        if condition_keys:
            extra.update(condition_keys)
        request = RequestContext.build(
            action,
            resource,
            principal_arn=caller.arn,
            username=resolved.username,
            userid=resolved.user_id or (caller.user_id or None),
            account=self.account_id or _account(caller.arn),
            source_ip=source_ip,
            now=datetime.fromtimestamp(now, UTC),
            secure_transport=secure_transport,
            mfa_present=mfa_present,
            mfa_age_seconds=mfa_age,
            principal_tags=resolved.principal_tags,
            requested_region=self.region,
            resource_tags=resource_tags,
            extra=extra,
        )
        decision = evaluate(resolved.policies, request)
        origin = None
        if decision.statement_index is not None:
            for policy in resolved.policies:
                if policy.name == decision.policy_name and policy.arn == decision.policy_arn:
                    origin = resolved.origins.get(id(policy))
                    break
        return decision, origin, mfa_present

    async def authorize(
        self,
        caller: Principal | None,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Decision:
        """:meth:`decide`, raising :func:`access_denied_error` (AccessDeniedException) when
        the answer is no. Keyword arguments are :meth:`decide`'s."""
        decision = await self.decide(caller, action, resource, context, **kwargs)
        if not decision.allowed:
            arn = caller.arn if caller is not None else "anonymous"
            raise access_denied_error(decision, arn, action, resource)
        return decision

    def bind(
        self,
        caller: Principal,
        *,
        source_ip: str | None = None,
        secure_transport: bool | None = None,
        request_id: str | None = None,
    ) -> BoundAuthorizer:
        """An :class:`AuthorizeFn` for one request, to hand to ``handle_iam``/``handle_sts``."""
        return BoundAuthorizer(self, caller, source_ip, secure_transport, request_id)

    # ------------------------------------------------------------------ audit

    def record(
        self,
        caller: Principal | None,
        action: str,
        resource_arn: str | None,
        allowed: bool,
        reason: str,
        context: Mapping[str, Any],
    ) -> None:
        """Queue an audit event for a decision made elsewhere (e.g. a bad channel token)."""
        details = {k: v for k, v in context.items() if k not in _REQUEST_KEYS and v is not None}
        self._enqueue(
            self._event(caller, action, resource_arn, allowed, reason, context.get("request_id"),
                        context.get("source_ip"), details, self._clock())
        )

    def deny(
        self,
        caller: Principal | None,
        action: str,
        resource_arn: str | None,
        error: AwsError,
        context: Mapping[str, Any],
    ) -> None:
        """Record an authentication failure (no identity could be established)."""
        self.record(caller, action, resource_arn, False, f"{error.code}: {error.message}", context)

    async def write_event(
        self,
        caller: Principal | None,
        action: str,
        resource: str | None,
        allowed: bool,
        reason: str,
        *,
        request_id: str | None = None,
        source_ip: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        """Audit an outcome, decided by :meth:`decide` or outside it (written now, or
        queued when *background_audit* is on); the caller's access key joins *details*."""
        extra: dict[str, Any] = dict(details or {})
        if caller is not None and caller.access_key_id:
            extra["access_key_id"] = caller.access_key_id
        event = self._event(caller, action, resource, allowed, reason, request_id, source_ip,
                            extra, self._clock() if now is None else now)
        if self.background_audit:
            self._enqueue(event)
        else:
            await self._write(event)

    @staticmethod
    def _event(caller: Principal | None, action: str, resource: str | None, allowed: bool,
               reason: str, request_id: str | None, source_ip: str | None,
               details: dict[str, Any], when: float) -> dict[str, Any]:
        """One audit event as queued and written by `_write` (the audit trail's fields)."""
        return {
            "time": when,
            "actor_arn": caller.arn if caller is not None else None,
            "action": action,
            "resource": resource,
            "decision": "allowed" if allowed else "denied",
            "reason": reason,
            "request_id": request_id,
            "source_ip": source_ip,
            "details": details,
        }

    def _enqueue(self, event: dict[str, Any]) -> None:
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to start
                self.start()
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.error("audit queue full; dropping the event for %s", event["action"])

    def start(self) -> None:
        """Start the background audit writer (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._writer(), name="audit-writer")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to *timeout*) and stop the writer."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until every queued event is written."""
        if self._task is not None:
            await self._queue.join()

    async def _writer(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._write(event)
            finally:
                self._queue.task_done()

    async def _write(self, event: dict[str, Any]) -> None:
        try:
            await self.store.append_audit_event(
                actor_arn=event["actor_arn"],
                action=event["action"],
                resource=event["resource"],
                decision=event["decision"],
                reason=event["reason"],
                request_id=event["request_id"],
                source_ip=event["source_ip"],
                details=event["details"],
                time_=event["time"],
            )
        except Exception:
            log.exception("could not write an audit event")


def _account(arn: str) -> str | None:
    try:
        return Arn.parse(arn).account or None
    except ValueError:
        return None


async def ensure_admin(
    store: Store, name: str, *, policy: ManagedPolicy = ADMINISTRATOR_ACCESS
) -> bool:
    """Attach AdministratorAccess to user *name* unless attached already.

    Returns True if it attached it now. NotFoundError if the user does not exist.
    """
    try:
        return await store.attach_policy("user", name, policy.arn)
    except NotFoundError:
        raise NotFoundError(f"user {name}") from None
