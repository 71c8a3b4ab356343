"""The authorization hook: the single place where allow/deny decisions are made.

Every operation calls :meth:`Authorizer.authorize` before it acts.  Today's
rules: users may do everything (IAM policies come later and plug in here);
node credentials may only do what AmazonSSMManagedInstanceCore grants a node,
and only for themselves.  Every decision becomes an audit event, written by a
background task so the request path does not wait for the hash chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from portless.aws.errors import AwsError, access_denied
from portless.server.auth import Caller
from portless.store import Store

log = logging.getLogger(__name__)

# What AmazonSSMManagedInstanceCore lets a node do (plus the RSA-signed calls).
NODE_ACTIONS = frozenset({
    "ssm:UpdateInstanceInformation",
    "ssm:ListInstanceAssociations",
    "ssm:DescribeInstanceProperties",
    "ssm:DescribeDocument",
    "ssm:GetDocument",
    "ssm:GetManifest",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:PutInventory",
    "ssm:PutComplianceItems",
    "ssm:PutConfigurePackageResult",
    "ssm:UpdateAssociationStatus",
    "ssm:UpdateInstanceAssociationStatus",
    "ssm:DescribeAssociation",
    "ssm:GetDeployablePatchSnapshotForInstance",
    "ssm:ListAssociations",
    "ssm:RequestManagedInstanceRoleToken",
    "ssm:UpdateManagedInstancePublicKey",
})
NODE_SERVICE_PREFIXES = ("ssmmessages:", "ec2messages:")

# Node actions whose resource must be the node itself.
_SELF_SCOPED = frozenset({
    "ssm:UpdateInstanceInformation",
    "ssm:ListInstanceAssociations",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:GetMessages",
})


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


class Authorizer:
    def __init__(self, store: Store, *, queue_limit: int = 100_000) -> None:
        self.store = store
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_limit)
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- rules

    def decide(self, caller: Caller, action: str, resource_arn: str | None,
               context: Mapping[str, Any]) -> Decision:
        if caller.kind == "user":
            return Decision(True, "user: allowed (no IAM policies yet)")
        if caller.kind == "instance":
            if action not in NODE_ACTIONS and not action.startswith(NODE_SERVICE_PREFIXES):
                return Decision(False, "because no identity-based policy allows the "
                                f"{action} action")
            if action in _SELF_SCOPED:
                target = str(context.get("instance_id") or "")
                if target and target != caller.instance_id:
                    return Decision(False, f"because {caller.instance_id} may only act for "
                                    "itself")
            return Decision(True, "node: AmazonSSMManagedInstanceCore")
        if action == "ssm:RegisterManagedInstance":
            return Decision(True, "anonymous: activation code")
        return Decision(False, "because the request is not authenticated")

    async def authorize(self, caller: Caller, action: str, resource_arn: str | None,
                        context: Mapping[str, Any] | None = None) -> None:
        """Allow or raise AccessDeniedException; record the decision either way."""
        ctx = context or {}
        decision = self.decide(caller, action, resource_arn, ctx)
        self.record(caller, action, resource_arn, decision.allowed, decision.reason, ctx)
        if not decision.allowed:
            raise access_denied(caller.arn, action, resource_arn, decision.reason)

    # ---------------------------------------------------------------- audit

    def record(self, caller: Caller | None, action: str, resource_arn: str | None,
               allowed: bool, reason: str, context: Mapping[str, Any]) -> None:
        details = {k: v for k, v in context.items()
                   if k not in ("request_id", "source_ip") and v is not None}
        event = {
            "time": time.time(),
            "actor_arn": caller.arn if caller is not None else None,
            "action": action,
            "resource": resource_arn,
            "decision": "allowed" if allowed else "denied",
            "reason": reason,
            "request_id": context.get("request_id"),
            "source_ip": context.get("source_ip"),
            "details": details,
        }
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.error("audit queue full; dropping the event for %s", action)

    def deny(self, caller: Caller | None, action: str, resource_arn: str | None,
             error: AwsError, context: Mapping[str, Any]) -> None:
        """Record an authentication failure (no caller identity could be established)."""
        self.record(caller, action, resource_arn, False, f"{error.code}: {error.message}",
                    context)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._writer(),
                                                                name="audit-writer")

    async def stop(self, timeout: float = 5.0) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until every queued event is written (tests, shutdown)."""
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
                actor_arn=event["actor_arn"], action=event["action"],
                resource=event["resource"], decision=event["decision"],
                reason=event["reason"], request_id=event["request_id"],
                source_ip=event["source_ip"], details=event["details"], time_=event["time"])
        except Exception:
            log.exception("could not write an audit event")
