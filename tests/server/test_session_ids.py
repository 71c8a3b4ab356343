"""Session ids keep the caller's IAM user name, so `session/${aws:username}-*` policies work."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from portless.protocol.message import MessageType
from portless.server.ops_sessions import new_session_id
from tests.server.conftest import REGION, ServerThread
from tests.server.fakes import Node, client_connect, recv_until
from tests.waiting import wait_until

SUFFIX = re.compile(r"-[0-9a-f]{17}$")

OWN_SESSIONS = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow",
     "Action": ["ssm:StartSession", "ssm:GetConnectionStatus", "ssm:DescribeSessions"],
     "Resource": "*"},
    # Seed 004's statement, verbatim.
    {"Effect": "Allow", "Action": ["ssm:TerminateSession"],
     "Resource": ["arn:aws:ssm:*:*:session/${aws:username}-*"]},
]})


@pytest.mark.parametrize("name", ["john.doe@example.com", "a+b=c,d", "under_score",
                                  "rob.berger@informed.iq", "a-b", "mi-0123456789abcdef0"])
def test_name_kept_as_is(name: str) -> None:
    sid = new_session_id(name)
    assert sid.startswith(name + "-")
    assert SUFFIX.search(sid) and len(sid) == len(name) + 18


def test_distinct_names_distinct_prefixes() -> None:
    assert not new_session_id("a.b").startswith("a-b-")
    assert not new_session_id("a-b").startswith("a.b-")


def test_long_name_truncated_to_96() -> None:
    name = "x" * 64 + ".y" * 20
    sid = new_session_id(name)
    assert len(sid) == 96 and sid.startswith(name[:78] + "-") and SUFFIX.search(sid)


def test_characters_outside_iam_names_never_reach_the_id() -> None:
    sid = new_session_id("a/b?c#d%e f")
    assert sid.startswith("a_b_c_d_e_f-")
    assert new_session_id("").startswith("session-")


@dataclass
class User:
    name: str
    key: tuple[str, str]


def make_user(server: ServerThread, name: str, policy: str) -> User:
    akid, secret = server.credentials()
    iam = boto3.client("iam", endpoint_url=server.url, region_name=REGION,
                       aws_access_key_id=akid, aws_secret_access_key=secret,
                       config=Config(retries={"max_attempts": 1}))
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="own-sessions", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return User(name, (key["AccessKeyId"], key["SecretAccessKey"]))


@pytest.fixture
async def node(server: ServerThread) -> AsyncIterator[tuple[Node, aiohttp.ClientSession,
                                                           aiohttp.ClientWebSocketResponse]]:
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        control = await node.open_control()

        async def connected() -> bool:
            status = await asyncio.to_thread(server.ssm().get_connection_status,
                                             Target=node.instance_id)
            return bool(status["Status"] == "connected")

        await wait_until(connected, what=f"{node.instance_id} connected")
        yield node, http, control
        await control.close()


async def call(server: ServerThread, user: User, method: str, **kwargs: Any) -> Any:
    return await asyncio.to_thread(getattr(server.ssm(key=user.key), method), **kwargs)


async def test_own_sessions_policy(
        server: ServerThread,
        node: tuple[Node, aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]) -> None:
    agent_node, http, control = node
    john = await asyncio.to_thread(make_user, server, "john.doe@example.com", OWN_SESSIONS)
    other = await asyncio.to_thread(make_user, server, "john-doe@example.com", OWN_SESSIONS)

    out = await call(server, john, "start_session", Target=agent_node.instance_id)
    await recv_until(control, MessageType.INTERACTIVE_SHELL)
    sid = out["SessionId"]
    assert sid.startswith("john.doe@example.com-") and SUFFIX.search(sid)
    assert out["StreamUrl"] == (f"ws://127.0.0.1:{server.port}/v1/data-channel/{sid}"
                                "?role=publish_subscribe")

    # The id works on the wire: the agent's signed data channel and the client's StreamUrl.
    agent = await agent_node.open_data(sid)
    client = await client_connect(http, out["StreamUrl"], out["TokenValue"])

    # A user whose name differs only in '.' vs '-' is not the owner.
    with pytest.raises(ClientError) as exc:
        await call(server, other, "terminate_session", SessionId=sid)
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"

    assert (await call(server, john, "terminate_session", SessionId=sid))["SessionId"] == sid

    async def terminated() -> bool:
        found = (await call(server, john, "describe_sessions", State="History",
                            Filters=[{"key": "SessionId", "value": sid}]))["Sessions"]
        return bool(found and found[0]["Status"] == "Terminated")

    await wait_until(terminated, what=f"{sid} terminated")
    assert (server.config.data_dir / "recordings" / f"{sid}.cast").exists()
    await agent.close()
    await client.close()
