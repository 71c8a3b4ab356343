"""The authorizer against a real store: effective policies, request context, audit trail."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from portless.aws.errors import AwsError
from portless.iam.authorizer import Authorizer, access_denied_error, ensure_admin
from portless.iam.evaluation import Decision
from portless.iam.managed import ADMINISTRATOR_ACCESS, AMAZON_SSM_READ_ONLY_ACCESS
from portless.iam.principal import Caller
from portless.store import NotFoundError, Store

ACCOUNT = "123456789012"
REGION = "us-east-1"
NOW = 1_800_000_000.0
NODE_A = "mi-0123456789abcdef0"
NODE_B = "mi-0fedcba9876543210"
DOCUMENT = f"arn:aws:ssm:{REGION}::document/SSM-SessionManagerRunShell"


def node_arn(node: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:managed-instance/{node}"


def session_arn(sid: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/{sid}"


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str] = "*", **cond: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource}
    if cond:
        out["Condition"] = cond
    return out


def deny(action: str | list[str], resource: str | list[str] = "*") -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


@pytest.fixture
def authz(store: Store) -> Authorizer:
    return Authorizer(store, region=REGION, account_id=ACCOUNT)


async def user(store: Store, name: str, **tags: str) -> Caller:
    made = await store.create_user(name, arn=f"arn:aws:iam::{ACCOUNT}:user/{name}", tags=tags)
    key = await store.create_access_key(name)
    return Caller("user", made.name, made.arn, key.key.access_key_id, made.user_id, tags)


async def test_user_inline_policy_and_audit(store: Store, authz: Authorizer) -> None:
    alice = await user(store, "alice")
    target = node_arn(NODE_A)
    denied = await authz.decide(alice, "ssm:StartSession", target, {"request_id": "r1"})
    assert denied == Decision(allowed=False, reason="implicit deny")

    await store.put_inline_policy(
        "user", "alice", "connect", doc({**allow("ssm:StartSession", target), "Sid": "Connect"})
    )
    allowed = await authz.decide(
        alice,
        "ssm:StartSession",
        target,
        {"request_id": "r2", "source_ip": "10.0.0.1", "target": NODE_A},
    )
    assert allowed.allowed and allowed.policy_name == "connect" and allowed.sid == "Connect"
    assert not (await authz.decide(alice, "ssm:StartSession", node_arn(NODE_B))).allowed

    events = await store.list_audit_events()
    assert [(e.action, e.resource, e.decision) for e in events] == [
        ("ssm:StartSession", target, "denied"),
        ("ssm:StartSession", target, "allowed"),
        ("ssm:StartSession", node_arn(NODE_B), "denied"),
    ]
    ok = events[1]
    assert ok.actor_arn == alice.arn and ok.request_id == "r2" and ok.source_ip == "10.0.0.1"
    assert ok.reason == 'allowed by policy connect Statement[0] (Sid "Connect")'
    assert ok.details["policy_source"] == "user/alice"
    assert ok.details["statement_index"] == 0 and ok.details["target"] == NODE_A
    assert ok.details["access_key_id"] == alice.access_key_id
    assert await store.verify_audit_chain() is None


async def test_groups_managed_policies_and_explicit_deny(store: Store, authz: Authorizer) -> None:
    bob = await user(store, "bob")
    await store.create_group("ops", arn=f"arn:aws:iam::{ACCOUNT}:group/ops")
    await store.add_user_to_group("ops", "bob")
    # An AWS managed policy attached to the group.
    await store.attach_policy("group", "ops", AMAZON_SSM_READ_ONLY_ACCESS.arn)
    decision = await authz.decide(bob, "ssm:DescribeInstanceInformation")
    assert decision.allowed and decision.policy_arn == AMAZON_SSM_READ_ONLY_ACCESS.arn
    assert not (await authz.decide(bob, "ssm:StartSession", node_arn(NODE_A))).allowed

    # A customer managed policy attached to the group; its default version is what counts.
    arn = f"arn:aws:iam::{ACCOUNT}:policy/Sessions"
    await store.create_policy("Sessions", arn=arn, document=doc(allow("ssm:StartSession")))
    await store.attach_policy("group", "ops", arn)
    decision = await authz.decide(bob, "ssm:StartSession", node_arn(NODE_A))
    assert decision.allowed and decision.policy_arn == arn and decision.policy_name == "Sessions"
    await store.create_policy_version(
        arn, doc(allow("ssm:GetConnectionStatus")), set_as_default=True
    )
    assert not (await authz.decide(bob, "ssm:StartSession", node_arn(NODE_A))).allowed
    await store.set_default_policy_version(arn, "v1")
    assert (await authz.decide(bob, "ssm:StartSession", node_arn(NODE_A))).allowed

    # A group's explicit deny beats the user's own allow.
    await store.put_inline_policy("user", "bob", "all", doc(allow("ssm:*")))
    await store.put_inline_policy(
        "group", "ops", "no-prod", doc(deny("ssm:StartSession", node_arn(NODE_B)))
    )
    decision = await authz.decide(bob, "ssm:StartSession", node_arn(NODE_B))
    assert decision.reason == "explicit deny" and decision.policy_name == "no-prod"
    events = await store.list_audit_events(newest_first=True, limit=1)
    assert events[0].details["policy_source"] == "group/ops"

    # Removing bob from the group: its deny and its allows go at once.
    await store.remove_user_from_group("ops", "bob")
    decision = await authz.decide(bob, "ssm:StartSession", node_arn(NODE_B))
    assert decision.allowed and decision.policy_name == "all"


async def test_revocation_is_immediate(store: Store, authz: Authorizer) -> None:
    carol = await user(store, "carol")
    await store.attach_policy("user", "carol", ADMINISTRATOR_ACCESS.arn)
    assert (await authz.decide(carol, "ssm:StartSession", node_arn(NODE_A))).allowed
    await store.detach_policy("user", "carol", ADMINISTRATOR_ACCESS.arn)
    assert not (await authz.decide(carol, "ssm:StartSession", node_arn(NODE_A))).allowed
    await store.put_inline_policy("user", "carol", "p", doc(allow("ssm:*")))
    assert (await authz.decide(carol, "ssm:StartSession", node_arn(NODE_A))).allowed
    await store.delete_inline_policy("user", "carol", "p")
    assert not (await authz.decide(carol, "ssm:StartSession", node_arn(NODE_A))).allowed
    await store.attach_policy("user", "carol", ADMINISTRATOR_ACCESS.arn)
    await store.delete_user("carol")
    gone = await authz.decide(carol, "ssm:StartSession", node_arn(NODE_A))
    assert not gone.allowed
    last = (await store.list_audit_events(newest_first=True, limit=1))[0]
    assert last.details["note"] == "the user no longer exists"


async def test_seed_004_policy_with_username_variable(store: Store, authz: Authorizer) -> None:
    dave = await user(store, "dave")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": [
                    "arn:aws:ec2:*:*:instance/i-0123456789abcdef0",
                    node_arn(NODE_A),
                    "arn:aws:ssm:*:*:document/AWS-StartSSHSession",
                ],
            },
            {
                "Effect": "Allow",
                "Action": ["ssm:TerminateSession", "ssm:ResumeSession"],
                "Resource": ["arn:aws:ssm:*:*:session/${aws:username}-*"],
            },
        ],
    }
    await store.put_inline_policy("user", "dave", "seed004", json.dumps(policy))
    assert (await authz.decide(dave, "ssm:StartSession", node_arn(NODE_A))).allowed
    ssh_doc = f"arn:aws:ssm:{REGION}::document/AWS-StartSSHSession"
    assert (await authz.decide(dave, "ssm:StartSession", ssh_doc)).allowed
    assert not (await authz.decide(dave, "ssm:StartSession", node_arn(NODE_B))).allowed
    own = session_arn("dave-0123456789abcdef0")
    assert (await authz.decide(dave, "ssm:TerminateSession", own)).allowed
    assert (await authz.decide(dave, "ssm:ResumeSession", own)).allowed
    other = session_arn("erin-0123456789abcdef0")
    assert not (await authz.decide(dave, "ssm:TerminateSession", other)).allowed


async def test_principal_and_resource_tags(store: Store, authz: Authorizer) -> None:
    erin = await user(store, "erin", team="blue")
    await store.create_instance(instance_id=NODE_A, tags={"Team": "blue", "Env": "dev"})
    await store.create_instance(instance_id=NODE_B, tags={"Team": "red", "Env": "prod"})
    await store.put_inline_policy(
        "user",
        "erin",
        "team",
        doc(
            allow(
                "ssm:StartSession",
                "arn:aws:ssm:*:*:managed-instance/*",
                StringEquals={"ssm:resourceTag/Team": "${aws:PrincipalTag/team}"},
            )
        ),
    )
    assert (await authz.decide(erin, "ssm:StartSession", node_arn(NODE_A))).allowed
    assert not (await authz.decide(erin, "ssm:StartSession", node_arn(NODE_B))).allowed
    # Tags are read per call: retagging the node or the user changes the answer at once.
    await store.add_instance_tags(NODE_B, {"Team": "blue"})
    assert (await authz.decide(erin, "ssm:StartSession", node_arn(NODE_B))).allowed
    await store.update_user_tags("erin", set_tags={"team": "green"})
    assert not (await authz.decide(erin, "ssm:StartSession", node_arn(NODE_A))).allowed
    # Tags the caller passes win over the lookup.
    assert (
        await authz.decide(
            erin, "ssm:StartSession", node_arn(NODE_A), resource_tags={"Team": "green"}
        )
    ).allowed


async def test_source_ip_secure_transport_and_time(store: Store, authz: Authorizer) -> None:
    fay = await user(store, "fay")
    await store.put_inline_policy(
        "user",
        "fay",
        "net",
        doc(
            allow(
                "ssm:StartSession",
                IpAddress={"aws:SourceIp": "10.0.0.0/8"},
                Bool={"aws:SecureTransport": "true"},
                DateLessThan={"aws:CurrentTime": "2030-01-01T00:00:00Z"},
            )
        ),
    )
    arn = node_arn(NODE_A)
    ctx = {"source_ip": "10.1.2.3", "secure_transport": True}
    assert (await authz.decide(fay, "ssm:StartSession", arn, ctx, now=NOW)).allowed
    assert not (
        await authz.decide(fay, "ssm:StartSession", arn, {**ctx, "source_ip": "192.0.2.1"}, now=NOW)
    ).allowed
    assert not (
        await authz.decide(
            fay, "ssm:StartSession", arn, {**ctx, "secure_transport": False}, now=NOW
        )
    ).allowed
    assert not (await authz.decide(fay, "ssm:StartSession", arn, ctx, now=2_000_000_000.0)).allowed


async def test_mfa_keys_from_credentials(store: Store, authz: Authorizer) -> None:
    gus = await user(store, "gus")
    await store.put_inline_policy(
        "user",
        "gus",
        "mfa",
        doc(
            {
                "Sid": "DenyWithoutMfa",
                "Effect": "Deny",
                "Action": "ssm:StartSession",
                "Resource": "*",
                "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
            },
            allow("ssm:StartSession", NumericLessThan={"aws:MultiFactorAuthAge": "300"}),
        ),
    )
    arn = node_arn(NODE_A)
    # Long-term key: the key is absent, so the BoolIfExists deny applies.
    decision = await authz.decide(gus, "ssm:StartSession", arn)
    assert decision.reason == "explicit deny" and decision.sid == "DenyWithoutMfa"

    plain = await store.issue_session_credential("gus", ttl=900, now=NOW)
    session = Caller("user", "gus", gus.arn, plain.access_key_id, gus.user_id, temporary=True)
    assert (await authz.decide(session, "ssm:StartSession", arn, now=NOW)).reason == "explicit deny"

    cred = await store.issue_session_credential(
        "gus", ttl=900, mfa_serial="arn:aws:iam::1:mfa/g", mfa_authenticated_at=NOW, now=NOW
    )

    @dataclass(frozen=True)
    class ServerCaller:  # the server's own Caller shape: no MFA fields, looked up instead
        kind: str
        name: str
        arn: str
        access_key_id: str = ""
        user_id: str = ""
        tags: dict[str, str] = field(default_factory=dict)

    mfa_caller = ServerCaller("user", "gus", gus.arn, cred.access_key_id, gus.user_id)
    assert (await authz.decide(mfa_caller, "ssm:StartSession", arn, now=NOW + 60)).allowed
    # Too long ago: the age condition fails (implicit deny, not the explicit one).
    late = await authz.decide(mfa_caller, "ssm:StartSession", arn, now=NOW + 600)
    assert late.reason == "implicit deny"
    mine = Caller(
        "user", "gus", gus.arn, cred.access_key_id, gus.user_id,
        temporary=True, mfa_authenticated_at=NOW,
    )  # fmt: skip
    assert (await authz.decide(mine, "ssm:StartSession", arn, now=NOW + 60)).allowed


async def test_nodes_act_with_their_role(store: Store, authz: Authorizer) -> None:
    await store.create_instance(instance_id=NODE_A, iam_role="")
    await store.create_instance(instance_id=NODE_B, iam_role="PowerRole")
    node = Caller("instance", NODE_A, node_arn(NODE_A), "ASIAEXAMPLEEXAMPLE00", temporary=True)
    # AmazonSSMManagedInstanceCore by default.
    ok = await authz.decide(node, "ssm:UpdateInstanceInformation", node_arn(NODE_A))
    assert ok.allowed and ok.policy_name == "AmazonSSMManagedInstanceCore"
    assert (await authz.decide(node, "ssmmessages:CreateControlChannel", None,
                               {"instance_id": NODE_A})).allowed  # fmt: skip
    # Not: sessions, reading other nodes, or acting for another node.
    assert not (await authz.decide(node, "ssm:StartSession", node_arn(NODE_B))).allowed
    assert not (await authz.decide(node, "ssm:DescribeInstanceInformation")).allowed
    other = await authz.decide(node, "ssm:UpdateInstanceInformation", node_arn(NODE_B))
    assert not other.allowed
    assert not (
        await authz.decide(node, "ssmmessages:OpenControlChannel", None, {"instance_id": NODE_B})
    ).allowed
    last = (await store.list_audit_events(newest_first=True, limit=1))[0]
    assert last.details["note"] == f"{NODE_A} may only act for itself"

    # A role with policies of its own gets those instead of the default.
    power = Caller("instance", NODE_B, node_arn(NODE_B), "ASIAEXAMPLEEXAMPLE01", temporary=True)
    assert not (await authz.decide(power, "ssm:DescribeInstanceInformation")).allowed
    await store.attach_policy("role", "PowerRole", AMAZON_SSM_READ_ONLY_ACCESS.arn)
    assert (await authz.decide(power, "ssm:DescribeInstanceInformation")).allowed
    assert not (
        await authz.decide(power, "ssm:UpdateInstanceInformation", node_arn(NODE_B))
    ).allowed
    assert [p.name for p in await authz.policies_for(power)] == ["AmazonSSMReadOnlyAccess"]

    # A node deregistered since its credentials were issued can do nothing.
    await store.delete_instance(NODE_A)
    assert not (await authz.decide(node, "ssm:UpdateInstanceInformation", node_arn(NODE_A))).allowed
    last = (await store.list_audit_events(newest_first=True, limit=1))[0]
    assert last.details["note"] == "the node is no longer registered"


async def test_anonymous(store: Store, authz: Authorizer) -> None:
    assert (await authz.decide(None, "ssm:RegisterManagedInstance")).allowed
    anon = Caller("anonymous", "anonymous", "anonymous")
    assert not (await authz.decide(anon, "ssm:StartSession", node_arn(NODE_A))).allowed


async def test_access_denied_messages(store: Store, authz: Authorizer) -> None:
    hal = await user(store, "hal")
    target = node_arn(NODE_A)
    with pytest.raises(AwsError) as exc:
        await authz.authorize(hal, "ssm:StartSession", target)
    assert exc.value.code == "AccessDeniedException" and exc.value.status == 400
    assert exc.value.message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/hal is not authorized to perform: "
        f"ssm:StartSession on resource: {target} because no identity-based policy allows "
        "the ssm:StartSession action"
    )
    await store.put_inline_policy("user", "hal", "d", doc(allow("*"), deny("ssm:StartSession")))
    with pytest.raises(AwsError) as exc:
        await authz.authorize(hal, "ssm:StartSession", target)
    assert exc.value.message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/hal is not authorized to perform: "
        f"ssm:StartSession on resource: {target} with an explicit deny in an identity-based "
        "policy"
    )
    assert (await authz.authorize(hal, "ssm:GetConnectionStatus", target)).allowed
    iam_error = access_denied_error(
        Decision(False, "implicit deny"), hal.arn, "iam:ListUsers", "*", code="AccessDenied",
        status=403,
    )  # fmt: skip
    assert (iam_error.code, iam_error.status) == ("AccessDenied", 403)
    assert iam_error.message.endswith(
        "perform: iam:ListUsers because no identity-based policy allows the iam:ListUsers action"
    )


async def test_ensure_admin(store: Store, authz: Authorizer) -> None:
    admin = await user(store, "admin")
    assert await ensure_admin(store, "admin")
    assert not await ensure_admin(store, "admin")
    assert await store.list_attached_policies("user", "admin") == [ADMINISTRATOR_ACCESS.arn]
    assert (await authz.decide(admin, "iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x")).allowed
    with pytest.raises(NotFoundError):
        await ensure_admin(store, "nobody")


async def test_background_audit_and_server_compat(store: Store) -> None:
    authz = Authorizer(store, region=REGION, account_id=ACCOUNT, background_audit=True)
    authz.start()
    try:
        ivy = await user(store, "ivy")
        await authz.decide(ivy, "ssm:StartSession", node_arn(NODE_A))
        authz.record(ivy, "ssmmessages:OpenDataChannel", None, False, "bad token",
                     {"request_id": "r9", "source_ip": "127.0.0.1"})  # fmt: skip
        authz.deny(None, "ssm:StartSession", None, AwsError("UnrecognizedClientException", "x"),
                   {"request_id": "r10"})  # fmt: skip
        await authz.flush()
        events = await store.list_audit_events()
        assert [(e.action, e.decision, e.reason) for e in events] == [
            ("ssm:StartSession", "denied", "implicit deny"),
            ("ssmmessages:OpenDataChannel", "denied", "bad token"),
            ("ssm:StartSession", "denied", "UnrecognizedClientException: x"),
        ]
        assert events[1].request_id == "r9" and events[1].source_ip == "127.0.0.1"
    finally:
        await authz.stop()
