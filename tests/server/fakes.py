"""Test peers that speak the wire protocols: a node (agent side) and a client.

They use the project's codec (portless.protocol) and signers (portless.aws),
and aiohttp for HTTP and WebSockets, so the server sees exactly what a stock
agent and plugin would send.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from portless.aws.rsa_signature import generate_instance_key, public_key_b64, sign_rsa
from portless.aws.sigv4 import sign_request
from portless.protocol.message import FLAGS_SINGLE_SHOT, Message, MessageType, PayloadType, decode
from portless.protocol.payloads import (
    Acknowledge,
    AgentSessionState,
    AgentTaskComplete,
    InteractiveShell,
    OpenControlChannel,
    OpenDataChannel,
)

REGION = "us-east-1"
JSON11 = "application/x-amz-json-1.1"
AGENT_VERSION = "3.3.0.0"

_KEY_CACHE: list[rsa.RSAPrivateKey] = []

if TYPE_CHECKING:
    from tests.server.conftest import ServerThread


def instance_key() -> rsa.RSAPrivateKey:
    # RSA generation is slow; one key serves every fake node of a test run.
    if not _KEY_CACHE:
        _KEY_CACHE.append(generate_instance_key())
    return _KEY_CACHE[0]


def token_from_xml(text: str) -> str:
    found = re.search(r"<TokenValue>([^<]*)</TokenValue>", text)
    assert found, text
    return found.group(1)


def out_msg(seq: int, payload: bytes, ptype: int = PayloadType.OUTPUT) -> Message:
    return Message(MessageType.OUTPUT_STREAM_DATA, seq, 1 if seq == 0 else 0, ptype, payload)


def in_msg(seq: int, payload: bytes, ptype: int = PayloadType.OUTPUT) -> Message:
    return Message(MessageType.INPUT_STREAM_DATA, seq, 0, ptype, payload)


def ack_for(msg: Message) -> Message:
    return Acknowledge.for_message(msg).to_message()


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    half = len(body) // 2
    yield body[:half]
    yield body[half:]


@dataclass
class Node:
    """A registered managed instance with issued credentials (the agent's side)."""

    http: aiohttp.ClientSession
    base_url: str
    instance_id: str
    key: rsa.RSAPrivateKey
    fingerprint: str
    access_key: str = ""
    secret: str = ""
    token: str = ""
    expiration: float = 0.0

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[1]

    # ---------------------------------------------------------------- registration

    @classmethod
    async def register(cls, http: aiohttp.ClientSession, base_url: str, ssm: Any) -> Node:
        act = await asyncio.to_thread(ssm.create_activation, IamRole="SSMRole",
                                      RegistrationLimit=10)
        key = instance_key()
        fingerprint = str(uuid.uuid4())
        body = json.dumps({"ActivationCode": act["ActivationCode"],
                           "ActivationId": act["ActivationId"], "Fingerprint": fingerprint,
                           "PublicKey": public_key_b64(key), "PublicKeyType": "Rsa"}).encode()
        async with http.post(base_url + "/", data=body, headers={
                "Content-Type": JSON11,
                "X-Amz-Target": "AmazonSSM.RegisterManagedInstance"}) as resp:
            assert resp.status == 200, await resp.text()
            instance_id = (await resp.json(content_type=None))["InstanceId"]
        node = cls(http, base_url, instance_id, key, fingerprint)
        await node.refresh_credentials()
        return node

    async def rsa_call(self, operation: str, payload: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": JSON11, "X-Amz-Target": f"AmazonSSM.{operation}"}
        headers.update(sign_rsa("POST", self.base_url + "/", headers, body, self.instance_id,
                                self.key, REGION, datetime.now(UTC)))
        # The stock agent sends this call chunked, without Content-Length.
        async with self.http.post(self.base_url + "/", data=_chunked(body),
                                  headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def refresh_credentials(self) -> None:
        status, out = await self.rsa_call("RequestManagedInstanceRoleToken",
                                          {"Fingerprint": self.fingerprint})
        assert status == 200, out
        self.access_key = out["AccessKeyId"]
        self.secret = out["SecretAccessKey"]
        self.token = out["SessionToken"]
        self.expiration = out["TokenExpirationDate"]

    # ---------------------------------------------------------------- signed calls

    def _sign(self, method: str, url: str, headers: dict[str, str], body: bytes,
              service: str) -> dict[str, str]:
        signed = dict(headers)
        signed.update(sign_request(method, url, headers, body, self.access_key, self.secret,
                                   self.token, REGION, service, datetime.now(UTC)))
        return signed

    async def call(self, target: str, payload: dict[str, Any],
                   service: str = "ssm") -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        headers = self._sign("POST", self.base_url + "/",
                             {"Content-Type": JSON11, "X-Amz-Target": target}, body, service)
        async with self.http.post(self.base_url + "/", data=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def mgs_post(self, path: str, payload: dict[str, Any]) -> tuple[int, str]:
        body = json.dumps(payload).encode()
        url = self.base_url + path
        headers = self._sign("POST", url, {"Content-Type": "application/json"}, body,
                             "ssmmessages")
        async with self.http.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def ws_connect(self, path_and_query: str) -> aiohttp.ClientWebSocketResponse:
        url = self.base_url + path_and_query
        ws_url = url.replace("http", "ws", 1)
        headers = self._sign("GET", ws_url, {}, b"", "ssmmessages")
        return await self.http.ws_connect(ws_url, headers=headers, autoping=True,
                                          max_msg_size=8 * 1024 * 1024)

    # ---------------------------------------------------------------- channels

    async def update_info(self) -> tuple[int, Any]:
        return await self.call("AmazonSSM.UpdateInstanceInformation", {
            "AgentName": "amazon-ssm-agent", "AgentVersion": AGENT_VERSION,
            "InstanceId": self.instance_id, "PlatformType": "Linux"})

    async def open_control(self) -> aiohttp.ClientWebSocketResponse:
        status, text = await self.mgs_post(f"/v1/control-channel/{self.instance_id}", {
            "MessageSchemaVersion": "1.0", "RequestId": str(uuid.uuid4())})
        assert status == 201, text
        ws = await self.ws_connect(
            f"/v1/control-channel/{self.instance_id}?role=subscribe&stream=input")
        await ws.send_str(OpenControlChannel(token_from_xml(text), AGENT_VERSION).to_json())
        return ws

    async def data_token(self, session_id: str) -> tuple[int, str]:
        return await self.mgs_post(f"/v1/data-channel/{session_id}", {
            "MessageSchemaVersion": "1.0", "RequestId": str(uuid.uuid4()), "ClientId": ""})

    async def open_data(self, session_id: str, *,
                        send_state: bool = True) -> aiohttp.ClientWebSocketResponse:
        status, text = await self.data_token(session_id)
        assert status == 201, text
        ws = await self.ws_connect(f"/v1/data-channel/{session_id}?role=publish_subscribe")
        await ws.send_str(OpenDataChannel(token_from_xml(text),
                                          client_instance_id=self.instance_id).to_json())
        if send_state:
            await ws.send_bytes(AgentSessionState(session_id, "Connected").to_message().encode())
        return ws

    async def task_complete(self, control: aiohttp.ClientWebSocketResponse, session_id: str,
                            status: str = "Success", output: str = "") -> Message:
        msg = AgentTaskComplete(session_id, self.instance_id, status, output).to_message()
        await control.send_bytes(msg.encode())
        return msg


async def client_connect(http: aiohttp.ClientSession, stream_url: str,
                         token: str, client_id: str | None = None
                         ) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(stream_url, autoping=True, max_msg_size=8 * 1024 * 1024)
    await ws.send_str(OpenDataChannel(token, client_id=client_id or str(uuid.uuid4()),
                                      client_version="1.2.694.0").to_json())
    return ws


async def recv_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> bytes:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.BINARY, (msg.type, msg.data, msg.extra)
    return bytes(msg.data)


async def recv_message(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Message:
    return decode(await recv_frame(ws, timeout))


async def recv_until(ws: aiohttp.ClientWebSocketResponse, message_type: str,
                     timeout: float = 5.0) -> Message:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = await recv_message(ws, max(left, 0.01))
        if msg.message_type == message_type:
            return msg


async def expect_closed(ws: aiohttp.ClientWebSocketResponse,
                        timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes; returns (close code, reason)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = await asyncio.wait_for(ws.receive(), max(left, 0.01))
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING):
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return int(msg.data), str(msg.extra or "")
            return ws.close_code, str(msg.extra or "")
        if msg.type == aiohttp.WSMsgType.ERROR:
            return ws.close_code, str(msg.data)


def interactive_shell(msg: Message) -> InteractiveShell:
    assert msg.message_type == MessageType.INTERACTIVE_SHELL, msg.message_type
    return InteractiveShell.from_json(msg.payload)


def raw_content(msg: Message) -> dict[str, Any]:
    """The task payload of an interactive_shell exactly as sent (JSON types kept)."""
    outer = json.loads(msg.payload)
    content: dict[str, Any] = json.loads(outer["Content"])
    return content


__all__ = ["FLAGS_SINGLE_SHOT", "Node", "ack_for", "client_connect", "in_msg", "out_msg"]



async def ping_status(server: ServerThread, instance_id: str) -> str:
    """The node's PingStatus as DescribeInstanceInformation reports it."""
    out = await asyncio.to_thread(
        server.ssm().describe_instance_information,
        Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
    (item,) = out["InstanceInformationList"]
    return str(item["PingStatus"])
