"""Small builders for policy documents and request contexts used across the IAM tests."""

from __future__ import annotations

from typing import Any

from portless.iam.context import ContextValue, RequestContext

V12 = "2012-10-17"
V08 = "2008-10-17"
ACCOUNT = "123456789012"
NODE = f"arn:aws:ssm:us-east-1:{ACCOUNT}:managed-instance/mi-0123456789abcdef0"
OTHER_NODE = f"arn:aws:ssm:us-east-1:{ACCOUNT}:managed-instance/mi-0fedcba9876543210"
DOCUMENT = "arn:aws:ssm:us-east-1::document/SSM-SessionManagerRunShell"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"

def st(
    effect: str = "Allow",
    action: str | list[str] | None = "*",
    resource: str | list[str] | None = "*",
    condition: dict[str, Any] | None = None,
    *,
    not_action: str | list[str] | None = None,
    not_resource: str | list[str] | None = None,
    sid: str | None = None,
) -> dict[str, Any]:
    """One statement; pass ``not_action``/``not_resource`` to use the negated elements."""
    out: dict[str, Any] = {"Effect": effect}
    if sid is not None:
        out["Sid"] = sid
    if not_action is not None:
        out["NotAction"] = not_action
    elif action is not None:
        out["Action"] = action
    if not_resource is not None:
        out["NotResource"] = not_resource
    elif resource is not None:
        out["Resource"] = resource
    if condition is not None:
        out["Condition"] = condition
    return out


def doc(*statements: dict[str, Any], version: str | None = V12) -> dict[str, Any]:
    """A policy document holding *statements* (a list, as most policies are written)."""
    out: dict[str, Any] = {"Statement": list(statements)}
    if version is not None:
        out = {"Version": version, **out}
    return out


def req(
    action: str = "ssm:StartSession",
    resource: str = NODE,
    keys: dict[str, ContextValue] | None = None,
    principal_arn: str | None = None,
) -> RequestContext:
    """A request context with explicit condition keys."""
    return RequestContext(action, resource, principal_arn=principal_arn, keys=keys or {})
