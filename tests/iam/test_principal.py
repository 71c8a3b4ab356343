"""`authenticate`: the expiry of temporary credentials is judged at the given moment, and a
request signed for another region is refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from portless.aws.errors import AwsError
from portless.aws.sigv4 import SignedRequest, sign_request
from portless.iam.principal import authenticate
from portless.store import Store

REGION = "us-east-1"
ACCOUNT = "123456789012"
URL = "https://ssm.example.test/"


def signed(akid: str, secret: str, token: str | None, when: datetime,
           region: str = REGION) -> SignedRequest:
    headers = {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "AmazonSSM.DescribeSessions"}
    body = b"{}"
    headers.update(sign_request("POST", URL, headers, body, akid, secret, token, region, "ssm",
                                when))
    headers.setdefault("Host", "ssm.example.test")
    return SignedRequest.from_target("POST", "/", headers, body)


async def test_expiry_is_judged_at_the_given_moment(store: Store) -> None:
    await store.create_user("alice", arn=f"arn:aws:iam::{ACCOUNT}:user/alice")
    start = time.time()
    cred = await store.issue_credential(principal_type="user", principal_id="alice", ttl=600,
                                        now=start)
    assert cred.session_token
    moment = datetime.fromtimestamp(start, UTC) + timedelta(seconds=60)
    req = signed(cred.access_key_id, cred.secret_access_key, cred.session_token, moment)
    caller = await authenticate(store, req, services="ssm", region=REGION, account_id=ACCOUNT,
                                now=moment)
    assert caller.name == "alice" and caller.temporary

    later = datetime.fromtimestamp(start, UTC) + timedelta(seconds=601)
    req = signed(cred.access_key_id, cred.secret_access_key, cred.session_token, later)
    with pytest.raises(AwsError) as exc:
        await authenticate(store, req, services="ssm", region=REGION, account_id=ACCOUNT,
                           now=later)
    assert exc.value.code == "ExpiredTokenException"

    # The session token is still checked (against the stored hash).
    req = signed(cred.access_key_id, cred.secret_access_key, "forged", moment)
    with pytest.raises(AwsError) as exc:
        await authenticate(store, req, services="ssm", region=REGION, account_id=ACCOUNT,
                           now=moment)
    assert exc.value.code == "UnrecognizedClientException"


async def test_request_signed_for_another_region_is_refused(store: Store) -> None:
    await store.create_user("bob", arn=f"arn:aws:iam::{ACCOUNT}:user/bob")
    key = await store.create_access_key("bob")
    now = datetime.now(UTC)
    ok = signed(key.key.access_key_id, key.secret_access_key, None, now)
    caller = await authenticate(store, ok, services="ssm", region=REGION, account_id=ACCOUNT,
                                now=now)
    assert caller.name == "bob"
    other = signed(key.key.access_key_id, key.secret_access_key, None, now, region="eu-west-1")
    with pytest.raises(AwsError) as exc:
        await authenticate(store, other, services="ssm", region=REGION, account_id=ACCOUNT,
                           now=now)
    assert exc.value.code == "InvalidSignatureException"
    assert "region" in exc.value.message
