"""The IAM query API driven by boto3 (and the AWS CLI) over loopback with real SigV4."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from portless.aws.sigv4 import sign_request
from portless.iam import totp
from portless.store import AuditEvent

from .iam_server import ACCOUNT, IamServer

ADMIN_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
CORE_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str] = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    server = IamServer(tmp_path_factory.mktemp("iam")).start()
    yield server
    server.stop()


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    resp = exc.value.response
    return (
        resp["Error"]["Code"],
        resp["ResponseMetadata"]["HTTPStatusCode"],
        resp["Error"]["Message"],
    )


def audit(srv: IamServer, action: str) -> list[AuditEvent]:
    assert srv.authorizer is not None
    srv.run(srv.authorizer.flush())  # authentication failures are queued, decisions are not
    events = srv.run(srv.st.list_audit_events(limit=10_000))
    return [e for e in events if e.action == action]


# --------------------------------------------------------------------------- users


def test_user_lifecycle(srv: IamServer) -> None:
    iam = srv.iam()
    made = iam.create_user(UserName="u-life", Path="/eng/", Tags=[{"Key": "team", "Value": "a"}])
    user = made["User"]
    assert user["UserName"] == "u-life" and user["Path"] == "/eng/"
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/eng/u-life"
    assert user["UserId"].startswith("AIDA") and user["Tags"] == [{"Key": "team", "Value": "a"}]
    got = iam.get_user(UserName="u-life")["User"]
    assert got["UserId"] == user["UserId"] and got["CreateDate"] == user["CreateDate"]
    assert iam.get_user()["User"]["UserName"] == "admin"  # no UserName: the caller

    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="u-life")
    assert error(exc)[:2] == ("EntityAlreadyExists", 409)
    assert "u-life" in error(exc)[2]

    names = [u["UserName"] for u in iam.list_users()["Users"]]
    assert "u-life" in names and "admin" in names
    assert [u["UserName"] for u in iam.list_users(PathPrefix="/eng/")["Users"]] == ["u-life"]
    first = iam.list_users(MaxItems=1)
    assert first["IsTruncated"] and len(first["Users"]) == 1
    rest = iam.list_users(Marker=first["Marker"])
    assert first["Users"][0]["UserName"] not in [u["UserName"] for u in rest["Users"]]
    paginated = [
        u
        for page in iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 1})
        for u in page["Users"]
    ]
    assert {u["UserName"] for u in paginated} >= {"admin", "u-life"}

    iam.tag_user(UserName="u-life", Tags=[{"Key": "SSMSessionRunAs", "Value": "ec2-user"}])
    tags = iam.list_user_tags(UserName="u-life")["Tags"]
    assert tags == [
        {"Key": "SSMSessionRunAs", "Value": "ec2-user"},
        {"Key": "team", "Value": "a"},
    ]
    iam.untag_user(UserName="u-life", TagKeys=["team"])
    assert iam.list_user_tags(UserName="u-life")["Tags"] == [
        {"Key": "SSMSessionRunAs", "Value": "ec2-user"}
    ]

    iam.delete_user(UserName="u-life")
    with pytest.raises(ClientError) as exc:
        iam.get_user(UserName="u-life")
    code, status, message = error(exc)
    assert (code, status) == ("NoSuchEntity", 404)
    assert message == "The user with name u-life cannot be found."
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_user(UserName="u-life")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.tag_user(UserName="u-life", Tags=[{"Key": "a", "Value": "b"}])


def test_delete_user_conflicts_like_aws(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_user(UserName="u-conf")
    iam.create_group(GroupName="g-conf")

    def conflict() -> str:
        with pytest.raises(ClientError) as exc:
            iam.delete_user(UserName="u-conf")
        code, status, message = error(exc)
        assert (code, status) == ("DeleteConflict", 409)
        return message

    key = iam.create_access_key(UserName="u-conf")["AccessKey"]["AccessKeyId"]
    assert "access keys" in conflict()
    iam.delete_access_key(UserName="u-conf", AccessKeyId=key)
    iam.put_user_policy(UserName="u-conf", PolicyName="p", PolicyDocument=doc(allow("ssm:*")))
    assert "policies" in conflict()
    iam.delete_user_policy(UserName="u-conf", PolicyName="p")
    iam.attach_user_policy(UserName="u-conf", PolicyArn=CORE_ARN)
    assert "detach" in conflict()
    iam.detach_user_policy(UserName="u-conf", PolicyArn=CORE_ARN)
    iam.add_user_to_group(GroupName="g-conf", UserName="u-conf")
    assert "group" in conflict()
    iam.remove_user_from_group(GroupName="g-conf", UserName="u-conf")
    iam.delete_user(UserName="u-conf")


def test_validation_errors(srv: IamServer) -> None:
    iam = srv.iam()
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="no spaces")
    code, status, message = error(exc)
    assert (code, status) == ("ValidationError", 400)
    assert message.startswith("1 validation error detected: Value 'no spaces' at 'userName'")
    assert "regular expression pattern" in message
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="x" * 65)
    assert "length less than or equal to 64" in error(exc)[2]
    iam.create_user(UserName="u-valid")
    key = iam.create_access_key(UserName="u-valid")["AccessKey"]["AccessKeyId"]
    with pytest.raises(ClientError) as exc:
        iam.update_access_key(UserName="u-valid", AccessKeyId=key, Status="Sleeping")
    assert "enum value set: [Active, Inactive" in error(exc)[2]
    with pytest.raises(ClientError) as exc:
        iam.update_access_key(UserName="u-valid", AccessKeyId=key, Status="Expired")
    assert error(exc)[0] == "ValidationError"


def _post(srv: IamServer, body: bytes, *, sign: bool, service: str = "iam") -> tuple[int, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if sign:
        headers.update(
            sign_request(
                "POST",
                srv.url + "/",
                headers,
                body,
                srv.admin_key[0],
                srv.admin_key[1],
                None,
                "us-east-1",
                service,
                datetime.now(UTC),
            )
        )
    req = urllib.request.Request(srv.url + "/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_unknown_action_and_unsigned_request(srv: IamServer) -> None:
    status, text = _post(srv, b"Action=ListUsers&Version=2010-05-08", sign=False)
    assert status == 403 and "<Code>MissingAuthenticationToken</Code>" in text
    status, text = _post(srv, b"Action=FlyToTheMoon&Version=2010-05-08", sign=True)
    assert status == 400 and "<Code>InvalidAction</Code>" in text
    assert '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">' in text
    status, text = _post(srv, b"Action=ListUsers&Version=2010-05-08", sign=True)
    assert status == 200 and text.startswith(
        '<ListUsersResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><ListUsersResult>'
    )
    status, text = _post(srv, b"Action=ListUsers&Version=2010-05-08", sign=True, service="ssm")
    assert status == 403 and "<Code>InvalidClientTokenId</Code>" in text


# --------------------------------------------------------------------------- groups


def test_groups(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_user(UserName="u-grp")
    group = iam.create_group(GroupName="g-devs", Path="/eng/")["Group"]
    assert group["GroupName"] == "g-devs" and group["GroupId"].startswith("AGPA")
    assert group["Arn"] == f"arn:aws:iam::{ACCOUNT}:group/eng/g-devs" and group["Path"] == "/eng/"
    with pytest.raises(ClientError) as exc:
        iam.create_group(GroupName="g-devs")
    assert error(exc)[:2] == ("EntityAlreadyExists", 409)
    iam.create_group(GroupName="g-ops")
    iam.add_user_to_group(GroupName="g-devs", UserName="u-grp")
    iam.add_user_to_group(GroupName="g-ops", UserName="u-grp")
    iam.add_user_to_group(GroupName="g-ops", UserName="u-grp")  # again: no error
    groups = iam.list_groups_for_user(UserName="u-grp")["Groups"]
    assert [g["GroupName"] for g in groups] == ["g-devs", "g-ops"]
    iam.remove_user_from_group(GroupName="g-ops", UserName="u-grp")
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName="u-grp")["Groups"]] == [
        "g-devs"
    ]
    with pytest.raises(ClientError) as exc:
        iam.add_user_to_group(GroupName="g-none", UserName="u-grp")
    assert error(exc)[:2] == ("NoSuchEntity", 404)
    assert "group with name g-none" in error(exc)[2]
    with pytest.raises(ClientError) as exc:
        iam.add_user_to_group(GroupName="g-devs", UserName="u-none")
    assert error(exc)[:2] == ("NoSuchEntity", 404)
    with pytest.raises(ClientError) as exc:
        iam.list_groups_for_user(UserName="u-none")
    assert error(exc)[0] == "NoSuchEntity"


# --------------------------------------------------------------------------- access keys


def test_access_keys(srv: IamServer) -> None:
    iam = srv.iam()
    key = srv.new_user("u-keys", ADMIN_ARN)
    made = iam.list_access_keys(UserName="u-keys")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in made] == [key[0]] and made[0]["Status"] == "Active"
    assert key[0].startswith("AKIA") and len(key[1]) == 40

    # The user manages their own keys without naming themselves.
    own = srv.iam(key)
    second = own.create_access_key()["AccessKey"]
    assert second["UserName"] == "u-keys" and second["Status"] == "Active"
    assert {k["AccessKeyId"] for k in own.list_access_keys()["AccessKeyMetadata"]} == {
        key[0],
        second["AccessKeyId"],
    }
    with pytest.raises(ClientError) as exc:
        iam.create_access_key(UserName="u-keys")
    code, status, message = error(exc)
    assert (code, status) == ("LimitExceeded", 409) and "AccessKeysPerUser: 2" in message

    # Deactivate: the key stops working on the very next request.
    second_key = (second["AccessKeyId"], second["SecretAccessKey"])
    assert srv.iam(second_key).get_user()["User"]["UserName"] == "u-keys"
    iam.update_access_key(UserName="u-keys", AccessKeyId=second_key[0], Status="Inactive")
    with pytest.raises(ClientError) as exc:
        srv.iam(second_key).get_user()
    assert error(exc)[:2] == ("InvalidClientTokenId", 403)
    statuses = {
        k["AccessKeyId"]: k["Status"]
        for k in iam.list_access_keys(UserName="u-keys")["AccessKeyMetadata"]
    }
    assert statuses[second_key[0]] == "Inactive"
    iam.update_access_key(UserName="u-keys", AccessKeyId=second_key[0], Status="Active")
    assert srv.iam(second_key).get_user()["User"]["UserName"] == "u-keys"

    # A key of another user is not found under this one.
    other = srv.new_user("u-keys-other")
    with pytest.raises(ClientError) as exc:
        iam.delete_access_key(UserName="u-keys", AccessKeyId=other[0])
    assert error(exc)[:2] == ("NoSuchEntity", 404)
    assert other[0] in error(exc)[2]

    iam.delete_access_key(UserName="u-keys", AccessKeyId=second_key[0])
    with pytest.raises(ClientError) as exc:
        srv.iam(second_key).get_user()
    assert error(exc)[0] == "InvalidClientTokenId"
    with pytest.raises(ClientError) as exc:
        srv.iam((key[0], "wrong" + key[1][5:])).get_user()
    assert error(exc)[:2] == ("SignatureDoesNotMatch", 403)


# --------------------------------------------------------------------------- inline policies


def test_inline_policies(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_user(UserName="u-inline")
    document = doc(
        {
            "Sid": "Sessions",
            "Effect": "Allow",
            "Action": ["ssm:StartSession"],
            "Resource": "arn:aws:ssm:*:*:session/${aws:username}-*",
        }
    )
    iam.put_user_policy(UserName="u-inline", PolicyName="sessions", PolicyDocument=document)
    got = iam.get_user_policy(UserName="u-inline", PolicyName="sessions")
    assert got["UserName"] == "u-inline" and got["PolicyName"] == "sessions"
    assert got["PolicyDocument"] == json.loads(document)  # URL-encoded on the wire, decoded
    with pytest.raises(ClientError) as exc:
        iam.get_user_policy(UserName="u-inline", PolicyName="other")
    assert error(exc)[:2] == ("NoSuchEntity", 404)

    bad = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:StartSession"}]}'
    with pytest.raises(ClientError) as exc:
        iam.put_user_policy(UserName="u-inline", PolicyName="bad", PolicyDocument=bad)
    code, status, message = error(exc)
    assert (code, status) == ("MalformedPolicyDocument", 400)
    assert "Statement[0]" in message and "Resource" in message
    with pytest.raises(ClientError) as exc:
        iam.put_user_policy(UserName="u-inline", PolicyName="bad", PolicyDocument="{not json")
    assert error(exc)[0] == "MalformedPolicyDocument"

    big = doc(*[allow(f"ssm:Describe{'X' * 40}{i}") for i in range(40)])
    with pytest.raises(ClientError) as exc:
        iam.put_user_policy(UserName="u-inline", PolicyName="big", PolicyDocument=big)
    assert error(exc)[0] == "LimitExceeded" and "2048" in error(exc)[2]

    iam.delete_user_policy(UserName="u-inline", PolicyName="sessions")
    with pytest.raises(ClientError) as exc:
        iam.delete_user_policy(UserName="u-inline", PolicyName="sessions")
    assert error(exc)[0] == "NoSuchEntity"

    iam.create_group(GroupName="g-inline")
    iam.put_group_policy(GroupName="g-inline", PolicyName="g", PolicyDocument=big)  # 5120 ok
    with pytest.raises(ClientError) as exc:
        iam.put_group_policy(GroupName="g-none", PolicyName="g", PolicyDocument=document)
    assert error(exc)[0] == "NoSuchEntity"


# --------------------------------------------------------------------------- managed policies


def test_managed_policies(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_user(UserName="u-managed")
    iam.create_group(GroupName="g-managed")
    document = doc(allow(["ssm:StartSession", "ssm:TerminateSession"]))
    made = iam.create_policy(
        PolicyName="SessionAccess", PolicyDocument=document, Description="start and end"
    )["Policy"]
    arn = f"arn:aws:iam::{ACCOUNT}:policy/SessionAccess"
    assert made["Arn"] == arn and made["DefaultVersionId"] == "v1"
    assert made["PolicyId"].startswith("ANPA") and made["AttachmentCount"] == 0
    with pytest.raises(ClientError) as exc:
        iam.create_policy(PolicyName="SessionAccess", PolicyDocument=document)
    assert error(exc)[:2] == ("EntityAlreadyExists", 409)
    with pytest.raises(ClientError) as exc:
        iam.create_policy(PolicyName="Broken", PolicyDocument='{"Statement": []}')
    assert error(exc)[0] == "MalformedPolicyDocument"

    got = iam.get_policy(PolicyArn=arn)["Policy"]
    assert got["PolicyName"] == "SessionAccess" and got["Description"] == "start and end"
    version = iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]
    assert version["Document"] == json.loads(document) and version["IsDefaultVersion"]
    with pytest.raises(ClientError) as exc:
        iam.get_policy_version(PolicyArn=arn, VersionId="v7")
    assert error(exc)[:2] == ("NoSuchEntity", 404)

    iam.attach_user_policy(UserName="u-managed", PolicyArn=arn)
    iam.attach_user_policy(UserName="u-managed", PolicyArn=CORE_ARN)
    iam.attach_group_policy(GroupName="g-managed", PolicyArn=arn)
    attached = iam.list_attached_user_policies(UserName="u-managed")["AttachedPolicies"]
    assert attached == [
        {"PolicyName": "SessionAccess", "PolicyArn": arn},
        {"PolicyName": "AmazonSSMManagedInstanceCore", "PolicyArn": CORE_ARN},
    ]
    assert iam.get_policy(PolicyArn=arn)["Policy"]["AttachmentCount"] == 2
    with pytest.raises(ClientError) as exc:
        iam.delete_policy(PolicyArn=arn)
    assert error(exc)[:2] == ("DeleteConflict", 409)

    missing = f"arn:aws:iam::{ACCOUNT}:policy/Nope"
    with pytest.raises(ClientError) as exc:
        iam.attach_user_policy(UserName="u-managed", PolicyArn=missing)
    assert error(exc)[:2] == ("NoSuchEntity", 404)
    assert "Nope does not exist or is not attachable" in error(exc)[2]
    with pytest.raises(ClientError) as exc:
        iam.attach_user_policy(UserName="u-managed", PolicyArn="arn:aws:iam::aws:policy/Nope")
    assert error(exc)[0] == "NoSuchEntity"

    iam.detach_user_policy(UserName="u-managed", PolicyArn=arn)
    with pytest.raises(ClientError) as exc:
        iam.detach_user_policy(UserName="u-managed", PolicyArn=arn)
    assert error(exc)[:2] == ("NoSuchEntity", 404)
    iam.detach_group_policy(GroupName="g-managed", PolicyArn=arn)
    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(ClientError) as exc:
        iam.get_policy(PolicyArn=arn)
    assert error(exc)[0] == "NoSuchEntity"


def test_aws_managed_policies_are_addressable(srv: IamServer) -> None:
    iam = srv.iam()
    for name in (
        "AmazonSSMManagedInstanceCore",
        "AmazonSSMFullAccess",
        "AmazonSSMReadOnlyAccess",
        "AdministratorAccess",
    ):
        arn = f"arn:aws:iam::aws:policy/{name}"
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
        assert policy["PolicyName"] == name and policy["Arn"] == arn
        version = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        assert version["PolicyVersion"]["Document"]["Statement"]
    core = iam.get_policy_version(PolicyArn=CORE_ARN, VersionId="v1")["PolicyVersion"]
    actions = [a for s in core["Document"]["Statement"] for a in s["Action"]]
    assert "ssmmessages:OpenDataChannel" in actions and "ssm:UpdateInstanceInformation" in actions
    with pytest.raises(ClientError) as exc:
        iam.delete_policy(PolicyArn=CORE_ARN)
    assert error(exc)[0] == "InvalidInput"


# --------------------------------------------------------------------------- MFA devices


def test_virtual_mfa_devices(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_user(UserName="u-mfa")
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName="u-mfa-phone")["VirtualMFADevice"]
    serial = device["SerialNumber"]
    assert serial == f"arn:aws:iam::{ACCOUNT}:mfa/u-mfa-phone"
    seed = device["Base32StringSeed"].decode()
    key = totp.decode_secret(seed)
    with pytest.raises(ClientError) as exc:
        iam.create_virtual_mfa_device(VirtualMFADeviceName="u-mfa-phone")
    assert error(exc)[:2] == ("EntityAlreadyExists", 409)

    step = totp.time_step(time.time())
    with pytest.raises(ClientError) as exc:  # two codes, but not consecutive
        iam.enable_mfa_device(
            UserName="u-mfa",
            SerialNumber=serial,
            AuthenticationCode1=totp.hotp(key, step),
            AuthenticationCode2=totp.hotp(key, step - 1),
        )
    assert error(exc)[:2] == ("InvalidAuthenticationCode", 403)
    iam.enable_mfa_device(
        UserName="u-mfa",
        SerialNumber=serial,
        AuthenticationCode1=totp.hotp(key, step - 1),
        AuthenticationCode2=totp.hotp(key, step),
    )
    devices = iam.list_mfa_devices(UserName="u-mfa")["MFADevices"]
    assert [(d["UserName"], d["SerialNumber"]) for d in devices] == [("u-mfa", serial)]
    assert devices[0]["EnableDate"]
    with pytest.raises(ClientError) as exc:
        iam.delete_user(UserName="u-mfa")
    assert error(exc)[0] == "DeleteConflict" and "MFA" in error(exc)[2]
    with pytest.raises(ClientError) as exc:
        iam.delete_virtual_mfa_device(SerialNumber=serial)
    assert error(exc)[0] == "DeleteConflict"

    iam.deactivate_mfa_device(UserName="u-mfa", SerialNumber=serial)
    assert iam.list_mfa_devices(UserName="u-mfa")["MFADevices"] == []
    with pytest.raises(ClientError) as exc:
        iam.deactivate_mfa_device(UserName="u-mfa", SerialNumber=serial)
    assert error(exc)[0] == "NoSuchEntity"
    iam.delete_virtual_mfa_device(SerialNumber=serial)
    with pytest.raises(ClientError) as exc:
        iam.enable_mfa_device(
            UserName="u-mfa",
            SerialNumber=serial,
            AuthenticationCode1="123456",
            AuthenticationCode2="654321",
        )
    assert error(exc)[:2] == ("NoSuchEntity", 404)
    iam.delete_user(UserName="u-mfa")


# --------------------------------------------------------------------------- authorization


def test_every_operation_is_authorized(srv: IamServer) -> None:
    nobody = srv.new_user("u-nobody")
    iam = srv.iam(nobody)
    with pytest.raises(ClientError) as exc:
        iam.create_user(UserName="u-made-by-nobody")
    code, status, message = error(exc)
    assert (code, status) == ("AccessDenied", 403)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT}:user/u-nobody is not authorized to perform: "
        f"iam:CreateUser on resource: arn:aws:iam::{ACCOUNT}:user/u-made-by-nobody because "
        "no identity-based policy allows the iam:CreateUser action"
    )
    calls: list[Callable[[], object]] = [
        lambda: iam.get_user(),
        lambda: iam.list_users(),
        lambda: iam.list_access_keys(),
        lambda: iam.create_group(GroupName="g-x"),
        lambda: iam.attach_user_policy(UserName="u-nobody", PolicyArn=ADMIN_ARN),
        lambda: iam.put_user_policy(
            UserName="u-nobody", PolicyName="p", PolicyDocument=doc(allow("*"))
        ),
        lambda: iam.get_policy(PolicyArn=CORE_ARN),
        lambda: iam.create_virtual_mfa_device(VirtualMFADeviceName="x"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc)[:2] == ("AccessDenied", 403)
    assert srv.run(srv.st.get_user("u-made-by-nobody")) is None
    denied = audit(srv, "iam:AttachUserPolicy")
    assert denied and denied[-1].decision == "denied"
    assert denied[-1].actor_arn == f"arn:aws:iam::{ACCOUNT}:user/u-nobody"
    assert denied[-1].resource == f"arn:aws:iam::{ACCOUNT}:user/u-nobody"
    assert denied[-1].reason == "implicit deny"
    assert denied[-1].details["access_key_id"] == nobody[0]


def test_self_service_with_username_variable(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_policy(
        PolicyName="ManageOwnKeys",
        PolicyDocument=doc(
            allow(
                ["iam:CreateAccessKey", "iam:ListAccessKeys", "iam:GetUser"],
                "arn:aws:iam::*:user/${aws:username}",
            )
        ),
    )
    key = srv.new_user("u-self", f"arn:aws:iam::{ACCOUNT}:policy/ManageOwnKeys")
    key_owner_arn = f"arn:aws:iam::{ACCOUNT}:user/u-self"
    srv.new_user("u-self-other")
    own = srv.iam(key)
    assert own.get_user()["User"]["UserName"] == "u-self"
    assert len(own.list_access_keys()["AccessKeyMetadata"]) == 1
    with pytest.raises(ClientError) as exc:
        own.list_access_keys(UserName="u-self-other")
    assert error(exc)[0] == "AccessDenied"
    allowed = audit(srv, "iam:ListAccessKeys")
    mine = [e for e in allowed if e.decision == "allowed" and e.actor_arn == key_owner_arn]
    assert mine and mine[-1].details["policy_source"] == "user/u-self"
    assert (mine[-1].reason or "").startswith("allowed by policy ManageOwnKeys Statement[0]")


def test_revocation_takes_effect_on_the_next_call(srv: IamServer) -> None:
    iam = srv.iam()
    iam.create_group(GroupName="g-readers")
    iam.put_group_policy(
        GroupName="g-readers", PolicyName="read", PolicyDocument=doc(allow("iam:ListUsers"))
    )
    key = srv.new_user("u-revoke")
    reader = srv.iam(key)
    with pytest.raises(ClientError):
        reader.list_users()
    iam.add_user_to_group(GroupName="g-readers", UserName="u-revoke")
    assert reader.list_users()["Users"]
    iam.remove_user_from_group(GroupName="g-readers", UserName="u-revoke")
    with pytest.raises(ClientError) as exc:
        reader.list_users()
    assert error(exc)[0] == "AccessDenied"

    # A user-attached managed policy, then detached.
    iam.attach_user_policy(UserName="u-revoke", PolicyArn=ADMIN_ARN)
    assert reader.list_users()["Users"]
    iam.detach_user_policy(UserName="u-revoke", PolicyArn=ADMIN_ARN)
    with pytest.raises(ClientError):
        reader.list_users()

    # An explicit deny beats the administrator's allow.
    iam.attach_user_policy(UserName="u-revoke", PolicyArn=ADMIN_ARN)
    iam.put_user_policy(
        UserName="u-revoke",
        PolicyName="no-users",
        PolicyDocument=doc({"Effect": "Deny", "Action": "iam:ListUsers", "Resource": "*"}),
    )
    with pytest.raises(ClientError) as exc:
        reader.list_users()
    assert error(exc)[2].endswith("with an explicit deny in an identity-based policy")
    assert reader.get_user()["User"]["UserName"] == "u-revoke"

    # Deactivating the key shuts the door at authentication.
    iam.update_access_key(UserName="u-revoke", AccessKeyId=key[0], Status="Inactive")
    with pytest.raises(ClientError) as exc:
        reader.get_user()
    assert error(exc)[0] == "InvalidClientTokenId"
    denials = [e for e in audit(srv, "iam:GetUser") if e.decision == "denied"]
    assert denials and "InvalidClientTokenId" in (denials[-1].reason or "")
    assert srv.run(srv.st.verify_audit_chain()) is None


# --------------------------------------------------------------------------- the AWS CLI


def test_aws_cli(srv: IamServer, tmp_path: Path) -> None:
    srv.iam().create_user(UserName="u-cli")
    srv.iam().put_user_policy(
        UserName="u-cli", PolicyName="p", PolicyDocument=doc(allow("ssm:StartSession"))
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": srv.admin_key[0],
        "AWS_SECRET_ACCESS_KEY": srv.admin_key[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    env.pop("AWS_PROFILE", None)

    def aws(*args: str) -> Any:
        out = subprocess.run(
            ["aws", "iam", *args, "--endpoint-url", srv.url, "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    users = aws("list-users")["Users"]
    assert "u-cli" in [u["UserName"] for u in users]
    got = aws("get-user-policy", "--user-name", "u-cli", "--policy-name", "p")
    assert got["PolicyDocument"]["Statement"][0]["Action"] == "ssm:StartSession"
    assert (
        aws("tag-user", "--user-name", "u-cli", "--tags", "Key=SSMSessionRunAs,Value=ec2-user")
        is None
    )
    seed = tmp_path / "seed.txt"
    made = aws(
        "create-virtual-mfa-device",
        "--virtual-mfa-device-name",
        "u-cli-phone",
        "--outfile",
        str(seed),
        "--bootstrap-method",
        "Base32StringSeed",
    )
    assert made["VirtualMFADevice"]["SerialNumber"].endswith(":mfa/u-cli-phone")
    assert len(totp.decode_secret(seed.read_text())) == totp.SECRET_BYTES
