"""Policy evaluation: explicit deny beats allow beats the implicit deny.

A statement *applies* to a request when its action element matches the action, its
resource element matches the resource and every condition clause holds. Evaluation looks
at every statement of every policy: the first applicable Deny (in policy order, then
statement order) decides; failing that the first applicable Allow; failing that nothing
does and the answer is the implicit deny. The :class:`Decision` names the policy and the
statement that decided, so enforcement can record *why*.

Matching rules: actions compare case-insensitively with ``*``/``?``; resources compare
case-sensitively with IAM's segment-aware ARN globbing; a Resource entry whose policy
variable cannot be resolved matches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from portless.iam.conditions import conditions_hold
from portless.iam.context import RequestContext
from portless.iam.policy import Policy, Statement
from portless.iam.variables import as_glob
from portless.iam.wildcards import arn_match, glob_match

__all__ = [
    "Decision",
    "Reason",
    "action_matches",
    "evaluate",
    "resource_matches",
    "statement_applies",
]

Reason = Literal["explicit deny", "allowed", "implicit deny"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, and (unless implicit) which policy and statement produced it."""

    allowed: bool
    reason: Reason
    policy_name: str | None = None
    policy_arn: str | None = None
    statement_index: int | None = None
    sid: str | None = None

    def describe(self) -> str:
        """One line for logs and audit records."""
        if self.statement_index is None:
            return self.reason
        sid = f' (Sid "{self.sid}")' if self.sid else ""
        return (
            f"{self.reason} by policy {self.policy_name or self.policy_arn or '(unnamed)'} "
            f"Statement[{self.statement_index}]{sid}"
        )


def action_matches(statement: Statement, action: str) -> bool:
    """Whether the statement's Action (or NotAction) element covers *action*."""
    lowered = action.lower()
    hit = any(glob_match(pattern, lowered) for pattern in statement.action_patterns)
    return not hit if statement.not_action else hit


def resource_matches(statement: Statement, ctx: RequestContext) -> bool:
    """Whether the statement's Resource (or NotResource) element covers the request."""
    hit = False
    for template in statement.resources:
        pieces = template.resolve(ctx.single)
        if pieces is not None and arn_match(as_glob(pieces), ctx.resource):
            hit = True
            break
    return not hit if statement.not_resource else hit


def statement_applies(statement: Statement, ctx: RequestContext) -> bool:
    """Action, resource and every condition match."""
    return (
        action_matches(statement, ctx.action)
        and resource_matches(statement, ctx)
        and conditions_hold(statement.conditions, ctx)
    )


def _decided(policy: Policy, statement: Statement, allowed: bool, reason: Reason) -> Decision:
    return Decision(
        allowed=allowed,
        reason=reason,
        policy_name=policy.name or None,
        policy_arn=policy.arn,
        statement_index=statement.index,
        sid=statement.sid,
    )


def evaluate(policies: Sequence[Policy], ctx: RequestContext) -> Decision:
    """Decide *ctx* against the principal's policies (identity policies, any order)."""
    first_allow: Decision | None = None
    for policy in policies:
        for statement in policy.statements:
            if not statement_applies(statement, ctx):
                continue
            if statement.effect == "Deny":
                return _decided(policy, statement, False, "explicit deny")
            if first_allow is None:
                first_allow = _decided(policy, statement, True, "allowed")
    return first_allow or Decision(allowed=False, reason="implicit deny")
