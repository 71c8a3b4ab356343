"""The agent's HTTP calls: SSM awsJson1.1 (agent spec §2-§6) and the MGS REST calls (§7, §8).

* SSM calls are `POST /` with `X-Amz-Target: AmazonSSM.<Op>`, signed with SigV4 using the
  session credentials the server issued; RegisterManagedInstance is anonymous and
  RequestManagedInstanceRoleToken is RSA-signed with the instance key (chunked body).
* CreateControlChannel / CreateDataChannel answer 201 with an XML token.
* The channel WebSockets are SigV4-signed GETs on the same paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import random
import ssl
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from portless.aws.errors import AwsError
from portless.aws.rsa_signature import sign_rsa
from portless.aws.sigv4 import sign_request
from portless.protocol.versions import PORTLESS_AGENT_VERSION

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
AGENT_NAME = "amazon-ssm-agent"
MGS_SERVICE = "ssmmessages"
SSM_SERVICE = "ssm"
REST_TIMEOUT = 15.0
SSM_TIMEOUT = 30.0
WS_MAX_MESSAGE = 64 * 2**20

RETRYABLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyUpdates",
                             "RequestLimitExceeded", "TooManyRequestsException"})

_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
USER_AGENT = (f"portless-agent (python{_PY}; linux; {platform.machine() or 'unknown'}) "
              f"{AGENT_NAME}/{PORTLESS_AGENT_VERSION}")


class NetworkError(Exception):
    """The server could not be reached or the connection broke (retryable)."""


class MgsError(Exception):
    """A CreateControlChannel/CreateDataChannel call did not answer 201."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body.strip()}" if body.strip() else f"HTTP {status}")
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: float
    """Epoch seconds."""


CredentialSource = Callable[[], Credentials]


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_body(obj: dict[str, Any]) -> bytes:
    """Compact JSON with the null members left out, in the order given."""
    return json.dumps({k: v for k, v in obj.items() if v is not None},
                      separators=(",", ":")).encode()


def parse_aws_error(status: int, body: bytes) -> AwsError:
    """The AWS error in a 4xx/5xx response (`__type` may be `prefix#Code`)."""
    code, message = "", ""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        raw = obj.get("__type") or obj.get("code") or obj.get("Code") or ""
        code = str(raw).rsplit("#", 1)[-1].split(":", 1)[0]
        message = str(obj.get("message") or obj.get("Message") or "")
    if not code:
        code = "InternalServerError" if status >= 500 else f"HTTP{status}"
        message = message or body.decode(errors="replace").strip()[:500]
    return AwsError(code, message, status)


def parse_token(body: str) -> str:
    """TokenValue from the MGS XML reply (any root element; agent spec §7)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MgsError(201, f"unparsable token response ({exc}): {body[:200]}") from None
    for elem in root.iter():
        if elem.tag.rsplit("}", 1)[-1] == "TokenValue" and elem.text:
            return elem.text.strip()
    raise MgsError(201, f"no TokenValue in the response: {body[:200]}")


def mgs_base(endpoint: str) -> tuple[str, str]:
    """(https base, wss base) from an endpoint URL: only scheme, host and port are kept.

    Plain `http://` (tests, loopback servers) maps to `ws://`.
    """
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    secure = parts.scheme.lower() != "http"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return (f"{'https' if secure else 'http'}://{netloc}",
            f"{'wss' if secure else 'ws'}://{netloc}")


def ssm_url(endpoint: str) -> str:
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust roots, plus `ca_file` when given; TLS 1.2 minimum."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    yield body


class AgentApi:
    """All calls the agent makes to its server."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str, region: str, *,
                 ssl_ctx: ssl.SSLContext | None = None,
                 credentials: CredentialSource | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.http = http
        self.endpoint = endpoint
        self.region = region
        self.ssm_url = ssm_url(endpoint)
        self.mgs_url, self.ws_url = mgs_base(endpoint)
        self.ssl: ssl.SSLContext | bool = ssl_ctx if ssl_ctx is not None else True
        self.credentials = credentials
        self.clock = clock

    def _creds(self) -> Credentials:
        if self.credentials is None:
            raise RuntimeError("no credential source configured")
        return self.credentials()

    # --------------------------------------------------------------- awsJson

    async def ssm(self, operation: str, body: dict[str, Any], *, auth: str = "sigv4",
                  instance_id: str = "", key: rsa.RSAPrivateKey | None = None,
                  retries: int = 3) -> dict[str, Any]:
        """Call `AmazonSSM.<operation>`; `auth` is "sigv4", "anonymous" or "rsa".

        Retries 5xx, throttling and network errors up to `retries` times (like the SDK).
        Raises AwsError or NetworkError.
        """
        attempt = 0
        while True:
            try:
                return await self._ssm_once(operation, json_body(body), auth, instance_id, key)
            except AwsError as exc:
                if attempt >= retries or not (exc.status >= 500 or exc.code in RETRYABLE_CODES):
                    raise
            except NetworkError:
                if attempt >= retries:
                    raise
            delay = 0.1 * 2**attempt * random.uniform(0.8, 1.2)
            attempt += 1
            await asyncio.sleep(delay)

    async def _ssm_once(self, operation: str, data: bytes, auth: str, instance_id: str,
                        key: rsa.RSAPrivateKey | None) -> dict[str, Any]:
        target = f"AmazonSSM.{operation}"
        headers: dict[str, str] = {"Content-Type": JSON_CONTENT_TYPE, "X-Amz-Target": target}
        payload: bytes | AsyncIterator[bytes] = data
        if auth == "sigv4":
            creds = self._creds()
            headers = {"Content-Length": str(len(data)), **headers}
            headers.update(sign_request("POST", self.ssm_url, headers, data,
                                        creds.access_key_id, creds.secret_access_key,
                                        creds.session_token, self.region, SSM_SERVICE,
                                        self.clock()))
        elif auth == "rsa":
            assert key is not None
            headers.update(sign_rsa("POST", self.ssm_url, headers, data, instance_id, key,
                                    self.region, self.clock()))
            payload = _chunked(data)      # the stock agent sends this one chunked
        elif auth != "anonymous":
            raise ValueError(f"unknown auth {auth!r}")
        headers["User-Agent"] = USER_AGENT
        try:
            async with self.http.post(self.ssm_url, data=payload, headers=headers, ssl=self.ssl,
                                      timeout=aiohttp.ClientTimeout(total=SSM_TIMEOUT)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NetworkError(f"{operation}: {exc or type(exc).__name__}") from exc
        if status != 200:
            raise parse_aws_error(status, raw)
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw)
        except ValueError:
            raise AwsError("SerializationException", f"{operation}: response is not JSON",
                           status) from None
        return obj if isinstance(obj, dict) else {}

    # ------------------------------------------------------------ operations

    async def register_managed_instance(self, activation_id: str, activation_code: str,
                                        fingerprint: str, public_key: str) -> str:
        out = await self.ssm("RegisterManagedInstance", {
            "ActivationCode": activation_code, "ActivationId": activation_id,
            "Fingerprint": fingerprint, "PublicKey": public_key, "PublicKeyType": "Rsa",
        }, auth="anonymous", retries=5)
        instance_id = out.get("InstanceId")
        if not isinstance(instance_id, str) or not instance_id:
            raise AwsError("InvalidResponse", "RegisterManagedInstance returned no InstanceId")
        return instance_id

    async def request_role_token(self, instance_id: str, key: rsa.RSAPrivateKey,
                                 fingerprint: str) -> dict[str, Any]:
        return await self.ssm("RequestManagedInstanceRoleToken", {"Fingerprint": fingerprint},
                              auth="rsa", instance_id=instance_id, key=key, retries=5)

    async def update_public_key(self, instance_id: str, old_key: rsa.RSAPrivateKey,
                                new_public_key: str) -> None:
        await self.ssm("UpdateManagedInstancePublicKey",
                       {"NewPublicKey": new_public_key, "NewPublicKeyType": "Rsa"},
                       auth="rsa", instance_id=instance_id, key=old_key)

    async def update_instance_information(self, fields: dict[str, Any]) -> None:
        await self.ssm("UpdateInstanceInformation", fields)

    async def list_instance_associations(self, instance_id: str) -> list[Any]:
        out = await self.ssm("ListInstanceAssociations",
                             {"InstanceId": instance_id, "MaxResults": 20})
        assoc = out.get("Associations")
        return assoc if isinstance(assoc, list) else []

    # ------------------------------------------------------------------- MGS

    async def _create_channel(self, path: str, body: dict[str, str]) -> str:
        url = self.mgs_url + path
        data = json.dumps(body, separators=(",", ":")).encode()
        creds = self._creds()
        headers = {"Content-Type": "application/json"}
        headers.update(sign_request("POST", url, headers, data, creds.access_key_id,
                                    creds.secret_access_key, creds.session_token, self.region,
                                    MGS_SERVICE, self.clock()))
        headers["User-Agent"] = USER_AGENT
        try:
            async with self.http.post(url, data=data, headers=headers, ssl=self.ssl,
                                      timeout=aiohttp.ClientTimeout(total=REST_TIMEOUT)) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NetworkError(f"POST {path}: {exc or type(exc).__name__}") from exc
        if status != 201:
            raise MgsError(status, text)
        return parse_token(text)

    async def create_control_channel(self, instance_id: str) -> str:
        return await self._create_channel(
            f"/v1/control-channel/{instance_id}",
            {"MessageSchemaVersion": "1.0", "RequestId": str(uuid.uuid4())})

    async def create_data_channel(self, session_id: str) -> str:
        return await self._create_channel(
            f"/v1/data-channel/{session_id}",
            {"MessageSchemaVersion": "1.0", "RequestId": str(uuid.uuid4()), "ClientId": ""})

    async def ws_connect(self, path: str, query: str) -> aiohttp.ClientWebSocketResponse:
        """Open a SigV4-signed WebSocket (no subprotocol, no compression, no Origin)."""
        url = f"{self.ws_url}{path}?{query}"
        creds = self._creds()
        headers = sign_request("GET", url, {}, b"", creds.access_key_id,
                               creds.secret_access_key, creds.session_token, self.region,
                               MGS_SERVICE, self.clock())
        headers["User-Agent"] = USER_AGENT
        try:
            async with asyncio.timeout(REST_TIMEOUT):
                return await self.http.ws_connect(
                    url, headers=headers, autoping=False, autoclose=True, ssl=self.ssl,
                    max_msg_size=WS_MAX_MESSAGE, compress=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise MgsError(exc.status, exc.message) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NetworkError(f"WebSocket {path}: {exc or type(exc).__name__}") from exc


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The one HTTP client of the agent process (proxies from the environment honoured)."""
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     auto_decompress=True) as http:
        yield http
