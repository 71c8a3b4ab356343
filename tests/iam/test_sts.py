"""STS over loopback with boto3: GetCallerIdentity, GetSessionToken with and without MFA,
and MFA-conditioned policies honouring the credentials it hands out."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from portless.iam import totp
from portless.iam.sts_api import MFA_FAILED_MESSAGE

from .iam_server import ACCOUNT, IamServer

MFA_REQUIRED = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadWithMfa",
                "Effect": "Allow",
                "Action": "iam:ListUsers",
                "Resource": "*",
                "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
            },
            {
                "Sid": "FreshMfaOnly",
                "Effect": "Allow",
                "Action": "iam:ListAccessKeys",
                "Resource": "*",
                "Condition": {"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}},
            },
        ],
    }
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    server = IamServer(tmp_path_factory.mktemp("sts")).start()
    yield server
    server.stop()


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    resp = exc.value.response
    return (
        resp["Error"]["Code"],
        resp["ResponseMetadata"]["HTTPStatusCode"],
        resp["Error"]["Message"],
    )


def mfa_user(srv: IamServer, name: str) -> tuple[tuple[str, str], str, bytes, int]:
    """A user with the MFA-conditioned policy, a key and an enabled virtual device.

    Returns (key, serial, device key bytes, last TOTP step used by EnableMFADevice).
    """
    iam = srv.iam()
    key = srv.new_user(name)
    iam.put_user_policy(UserName=name, PolicyName="mfa", PolicyDocument=MFA_REQUIRED)
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName=f"{name}-phone")
    serial = device["VirtualMFADevice"]["SerialNumber"]
    raw = totp.decode_secret(device["VirtualMFADevice"]["Base32StringSeed"].decode())
    step = totp.time_step(time.time())
    iam.enable_mfa_device(
        UserName=name,
        SerialNumber=serial,
        AuthenticationCode1=totp.hotp(raw, step - 1),
        AuthenticationCode2=totp.hotp(raw, step),
    )
    return key, serial, raw, step


def creds_of(response: dict[str, Any]) -> tuple[tuple[str, str], str]:
    c = response["Credentials"]
    return (c["AccessKeyId"], c["SecretAccessKey"]), c["SessionToken"]


def test_get_caller_identity(srv: IamServer) -> None:
    ident = srv.sts().get_caller_identity()
    assert ident["Account"] == ACCOUNT
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/admin"
    assert ident["UserId"].startswith("AIDA")
    # No permission is needed, even with no policy at all.
    bare = srv.new_user("s-bare")
    assert srv.sts(bare).get_caller_identity()["Arn"].endswith(":user/s-bare")


def test_get_session_token_without_mfa(srv: IamServer) -> None:
    key = srv.new_user("s-plain")
    before = datetime.now(UTC)
    out = srv.sts(key).get_session_token(DurationSeconds=900)
    (akid, secret), token = creds_of(out)
    assert akid.startswith("ASIA") and len(akid) == 20 and secret and token
    expires = out["Credentials"]["Expiration"]
    assert 890 <= (expires - before).total_seconds() <= 910
    ident = srv.sts((akid, secret), token).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/s-plain"
    # A token is part of the credentials: without it, or with another, the key is refused.
    with pytest.raises(ClientError) as exc:
        srv.sts((akid, secret)).get_caller_identity()
    assert code_of(exc)[0] == "InvalidClientTokenId"
    with pytest.raises(ClientError) as exc:
        srv.sts((akid, secret), token[:-2] + "xx").get_caller_identity()
    assert code_of(exc)[0] == "InvalidClientTokenId"
    # Session credentials cannot mint more session credentials.
    with pytest.raises(ClientError) as exc:
        srv.sts((akid, secret), token).get_session_token()
    assert code_of(exc)[:2] == ("AccessDenied", 403)
    assert "session credentials" in code_of(exc)[2]
    default = srv.sts(key).get_session_token()["Credentials"]["Expiration"]
    assert 43_100 <= (default - before).total_seconds() <= 43_300


@pytest.mark.parametrize("duration", [899, 129_601])
def test_duration_bounds(srv: IamServer, duration: int) -> None:
    with pytest.raises(ClientError) as exc:
        srv.client("sts", validate=False).get_session_token(DurationSeconds=duration)
    code, status, message = code_of(exc)
    assert (code, status) == ("ValidationError", 400)
    assert "durationSeconds" in message


def test_mfa_session_token_and_policy_conditions(srv: IamServer) -> None:
    key, serial, raw, step = mfa_user(srv, "s-mfa")
    plain = srv.iam(key)
    # Long-term keys carry no MFA: the MFA-conditioned statements do not apply.
    with pytest.raises(ClientError) as exc:
        plain.list_users()
    assert code_of(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError):
        plain.list_access_keys()
    # Session credentials without MFA: aws:MultiFactorAuthPresent is false.
    nomfa_key, nomfa_token = creds_of(srv.sts(key).get_session_token(DurationSeconds=900))
    with pytest.raises(ClientError):
        srv.iam(nomfa_key, nomfa_token).list_users()

    code = totp.hotp(raw, step + 1)
    out = srv.sts(key).get_session_token(DurationSeconds=900, SerialNumber=serial, TokenCode=code)
    mfa_key, mfa_token = creds_of(out)
    ident = srv.sts(mfa_key, mfa_token).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/s-mfa"
    with_mfa = srv.iam(mfa_key, mfa_token)
    assert with_mfa.list_users()["Users"]
    assert with_mfa.list_access_keys(UserName="s-mfa")["AccessKeyMetadata"]
    stored = srv.run(srv.st.get_credential_mfa(mfa_key[0]))
    assert stored is not None and stored.mfa_serial == serial
    assert abs(stored.authenticated_at - time.time()) < 60

    # The same code again is refused, as is the one EnableMFADevice used, and a wrong one.
    for bad in (code, totp.hotp(raw, step), wrong_code(raw, step)):
        with pytest.raises(ClientError) as exc:
            srv.sts(key).get_session_token(SerialNumber=serial, TokenCode=bad)
        assert code_of(exc) == ("AccessDenied", 403, MFA_FAILED_MESSAGE)
    # Someone else's device is no good either.
    other_key, *_ = mfa_user(srv, "s-mfa-other")
    with pytest.raises(ClientError) as exc:
        srv.sts(other_key).get_session_token(
            SerialNumber=serial, TokenCode=totp.hotp(raw, step + 2)
        )
    assert code_of(exc)[0] == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        srv.sts(key).get_session_token(SerialNumber=serial)
    assert code_of(exc)[0] == "AccessDenied"

    assert srv.authorizer is not None
    events = srv.run(srv.st.list_audit_events(limit=10_000))
    tokens = [e for e in events if e.action == "sts:GetSessionToken"]
    assert any(e.decision == "denied" and "MFA code refused" in (e.reason or "") for e in tokens)
    assert any(e.decision == "allowed" for e in tokens)
    listed = [e for e in events if e.action == "iam:ListUsers" and e.decision == "allowed"]
    assert listed[-1].details["mfa"] is True and listed[-1].details["sid"] == "ReadWithMfa"


def wrong_code(raw: bytes, step: int) -> str:
    valid = {totp.hotp(raw, s) for s in range(step - 3, step + 4)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
