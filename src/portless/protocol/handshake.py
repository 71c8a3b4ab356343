"""The session handshake, sans-I/O: the agent asks, the client answers, the agent completes.

Both sides end with the same `SessionParams`: session type, port mode (client spec §8.2,
agent spec §12.4) and, when both ends are portless, the fast-path settings negotiated in
the extra `PortlessFastPath` action (DESIGN.md, "The fast path between two portless
ends").  Message flow and JSON: client spec §7, agent spec §11.5.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from portless.protocol.payloads import (
    ActionStatus,
    ActionType,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    PayloadError,
    ProcessedAction,
    RequestedAction,
    SessionType,
    _get,
)
from portless.protocol.versions import (
    MUX_AGENT,
    MUX_CLIENT,
    SMUX_KEEPALIVE_OFF_AGENT,
    SMUX_KEEPALIVE_OFF_CLIENT,
    agent_newer_than,
    client_at_least,
    client_newer_than,
)

LOCAL_PORT_FORWARDING = "LocalPortForwarding"
FAST_PATH_VERSION = 1
KMS_DATA_KEY_SIZE = 64
HANDSHAKE_TIMEOUT = 15.0

DataKeyProvider = Callable[[str], tuple[bytes, bytes]]
"""KMS GenerateDataKey stand-in: KMSKeyId -> (64-byte plaintext key, ciphertext blob)."""


class HandshakeFailed(Exception):
    """The handshake cannot produce a session; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PortMode(Enum):
    """How a Port session carries its bytes (client spec §8.3-§8.5)."""

    STDIO = "stdio"
    BASIC = "basic"
    MUX = "mux"


@dataclass(frozen=True, slots=True)
class FastPath:
    """Fast-path settings for a portless-to-portless session."""

    max_payload: int
    window: int
    digest: bool
    smux_version: int

    def to_params(self) -> dict[str, Any]:
        return {"Version": FAST_PATH_VERSION, "MaxPayload": self.max_payload,
                "Window": self.window, "Digest": self.digest, "Smux": self.smux_version}

    @classmethod
    def from_params(cls, obj: Any) -> FastPath:
        """Parse ActionParameters / ActionResult of the PortlessFastPath action."""
        if not isinstance(obj, dict):
            raise PayloadError("PortlessFastPath parameters must be an object")
        version = _get(obj, "Version", int)
        if version < FAST_PATH_VERSION:
            raise PayloadError(f"unsupported fast path version {version}")
        fast = cls(_get(obj, "MaxPayload", int), _get(obj, "Window", int),
                   _get(obj, "Digest", bool), _get(obj, "Smux", int))
        if fast.max_payload < 1 or fast.window < 1 or fast.smux_version < 1:
            raise PayloadError("fast path values must be positive")
        return fast

    def agree(self, other: FastPath) -> FastPath:
        """The settings both ends can honour: the smaller limits; digests if either wants."""
        return FastPath(min(self.max_payload, other.max_payload), min(self.window, other.window),
                        self.digest or other.digest, min(self.smux_version, other.smux_version))

    def within(self, offer: FastPath) -> bool:
        return (self.max_payload <= offer.max_payload and self.window <= offer.window
                and self.smux_version <= offer.smux_version and (self.digest or not offer.digest))


@dataclass(slots=True)
class SessionParams:
    """What the handshake settled; equal on both ends (fast_path, port_mode, versions)."""

    session_type: str
    """As requested by the agent; the client runs all three shell types as Standard_Stream."""
    properties: Any
    agent_version: str
    client_version: str
    port_mode: PortMode | None
    """None unless session_type is Port."""
    fast_path: FastPath | None
    customer_message: str
    smux_keepalive: bool
    """Mux only: True if either end keeps smux keepalive on (then NOPs are needed ≤ 10 s)."""


def port_type(properties: Any) -> str:
    """The `type` port property as the Go peers decode it.

    encoding/json matches keys case-insensitively, lets the last matching key win and
    skips values of the wrong JSON type (client spec §7.3).
    """
    found = ""
    if isinstance(properties, dict):
        for key, value in properties.items():
            if isinstance(key, str) and key.lower() == "type" and isinstance(value, str):
                found = value
    return found


def client_port_mode(properties: Any, agent_version: str) -> PortMode | None:
    """The plugin's choice for a Port session (client spec §8.2)."""
    if port_type(properties) != LOCAL_PORT_FORWARDING:
        return PortMode.STDIO
    return PortMode.MUX if agent_newer_than(agent_version, MUX_AGENT) else PortMode.BASIC


def agent_port_mode(properties: Any, client_version: str) -> PortMode | None:
    """The agent's choice for a Port session (agent spec §11.5, §12.4)."""
    if port_type(properties) != LOCAL_PORT_FORWARDING:
        return PortMode.STDIO
    return PortMode.MUX if client_at_least(client_version, MUX_CLIENT) else PortMode.BASIC


def _smux_keepalive(agent_version: str, client_version: str) -> bool:
    plugin_keeps = not agent_newer_than(agent_version, SMUX_KEEPALIVE_OFF_AGENT)
    agent_keeps = not client_newer_than(client_version, SMUX_KEEPALIVE_OFF_CLIENT)
    return plugin_keeps or agent_keeps


def _resolve_port(session_type: str, properties: Any, agent_version: str,
                  client_version: str) -> tuple[PortMode | None, bool]:
    """Port mode and keepalive, computed identically on both ends from both versions.

    Each end's rule looks only at the peer's version, so an end whose own version predates
    mux must not pick it either; with that, both rules always agree.
    """
    if session_type != SessionType.PORT:
        return None, False
    mode = client_port_mode(properties, agent_version)
    if mode is PortMode.MUX and not client_at_least(client_version, MUX_CLIENT):
        mode = PortMode.BASIC
    return mode, mode is PortMode.MUX and _smux_keepalive(agent_version, client_version)


# -------------------------------------------------------------------- agent side


class AgentHandshake:
    """The agent's half: build the request, judge the response, send the completion."""

    def __init__(self, *, session_type: str, properties: Any, agent_version: str,
                 offer_fast_path: FastPath | None, now: float,
                 timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.session_type = session_type
        # The agent sends null Properties for the shell types (agent spec §11.5).
        self.properties = properties if session_type == SessionType.PORT else None
        self.agent_version = agent_version
        self.offer_fast_path = offer_fast_path
        self.started = now
        self.timeout = timeout
        self.params: SessionParams | None = None

    def request(self) -> bytes:
        """HandshakeRequest JSON, sent as PayloadType 5."""
        actions = [RequestedAction(ActionType.SESSION_TYPE,
                                   {"SessionType": self.session_type,
                                    "Properties": self.properties})]
        if self.offer_fast_path is not None:
            actions.append(RequestedAction(ActionType.PORTLESS_FAST_PATH,
                                           self.offer_fast_path.to_params()))
        return HandshakeRequest(self.agent_version, actions).to_json()

    def receive_response(self, payload: bytes, now: float) -> SessionParams:
        """Judge the HandshakeResponse (PayloadType 6); any failed stock action is fatal."""
        try:
            response = HandshakeResponse.from_json(payload)
        except PayloadError as exc:
            raise HandshakeFailed(f"invalid HandshakeResponse: {exc}") from None
        fast: FastPath | None = None
        for action in response.actions:
            if action.action_type == ActionType.PORTLESS_FAST_PATH:
                # A stock plugin answers the unknown action with status 0: fast path off.
                if action.status == ActionStatus.SUCCESS and self.offer_fast_path is not None:
                    try:
                        fast = FastPath.from_params(action.result)
                    except PayloadError as exc:
                        raise HandshakeFailed(f"invalid PortlessFastPath result: {exc}") from None
                    if not fast.within(self.offer_fast_path):
                        raise HandshakeFailed("PortlessFastPath result exceeds the offer")
                continue
            if action.status != ActionStatus.SUCCESS:
                raise HandshakeFailed(action.error or f"{action.action_type} failed with "
                                      f"ActionStatus {action.status}")
        mode, keepalive = _resolve_port(self.session_type, self.properties, self.agent_version,
                                        response.client_version)
        self.params = SessionParams(self.session_type, self.properties, self.agent_version,
                                    response.client_version, mode, fast, "", keepalive)
        return self.params

    def complete(self, now: float, customer_message: str = "") -> bytes:
        """HandshakeComplete JSON (PayloadType 7); the duration is integer nanoseconds."""
        if self.params is None:
            raise RuntimeError("complete() before receive_response()")
        self.params.customer_message = customer_message
        elapsed_ns = max(0, round((now - self.started) * 1e9))
        return HandshakeComplete(elapsed_ns, customer_message).to_json()

    def timed_out(self, now: float) -> bool:
        """True once the response is overdue (15 s by default, agent spec §11.5)."""
        return self.params is None and now - self.started > self.timeout


# ------------------------------------------------------------------- client side


class ClientHandshake:
    """The client's half: answer the request as the plugin does, then read the completion."""

    def __init__(self, *, client_version: str, accept_fast_path: FastPath | None,
                 data_key_provider: DataKeyProvider | None = None) -> None:
        self.client_version = client_version
        self.accept_fast_path = accept_fast_path
        self.data_key_provider = data_key_provider
        self.agent_version = ""
        self.session_type: str | None = None
        self.properties: Any = None
        self.fast_path: FastPath | None = None
        self.kms_key_id: str | None = None
        self.data_key: bytes | None = None
        """The 64-byte KMS data key once KMSEncryption succeeded (client uses K[0:32] to
        decrypt and K[32:64] to encrypt, client spec §7.7)."""

    def receive_request(self, payload: bytes) -> bytes:
        """Answer a HandshakeRequest (PayloadType 5) with HandshakeResponse JSON (type 6)."""
        try:
            request = HandshakeRequest.from_json(payload)
        except PayloadError as exc:
            raise HandshakeFailed(f"invalid HandshakeRequest: {exc}") from None
        self.agent_version = request.agent_version
        processed: list[ProcessedAction] = []
        errors: list[str] = []
        for action in request.actions:
            kind = action.action_type
            if kind == ActionType.SESSION_TYPE:
                done = self._session_type(action.parameters)
            elif kind == ActionType.KMS_ENCRYPTION:
                done = self._kms(action.parameters)
            elif kind == ActionType.PORTLESS_FAST_PATH and self.accept_fast_path is not None:
                done = self._fast_path(action.parameters, self.accept_fast_path)
            else:
                # The plugin's quirk for unknown actions: status left at 0, result 3 (§7.4).
                reason = f"Unsupported action {kind}"
                processed.append(ProcessedAction(kind, 0, int(ActionStatus.UNSUPPORTED), reason))
                errors.append(reason)
                continue
            if isinstance(done, str):
                processed.append(ProcessedAction(kind, ActionStatus.FAILED, None,
                                                 f"Failed to process action {kind}: {done}"))
                errors.append(done)
            else:
                processed.append(ProcessedAction(kind, ActionStatus.SUCCESS, done, ""))
        return HandshakeResponse(self.client_version, processed, errors or None).to_json()

    def _session_type(self, params: Any) -> Any:
        """None on success, else the failure reason (a str)."""
        try:
            if not isinstance(params, dict):
                raise PayloadError("ActionParameters must be an object")
            name = _get(params, "SessionType", str, "")
            properties = _get(params, "Properties", object, None)
        except PayloadError as exc:
            return str(exc)
        if name not in SessionType.ALL:
            return f"Unknown session type {name}"
        self.session_type = name
        self.properties = properties
        return None

    def _kms(self, params: Any) -> Any:
        if self.data_key_provider is None:
            return "KMS encryption is not supported by this client"
        try:
            if not isinstance(params, dict):
                raise PayloadError("ActionParameters must be an object")
            key_id = _get(params, "KMSKeyId", str)
        except PayloadError as exc:
            return str(exc)
        try:
            plaintext, blob = self.data_key_provider(key_id)
        except Exception as exc:
            return f"GenerateDataKey failed: {exc}"
        if len(plaintext) != KMS_DATA_KEY_SIZE:
            return f"data key must be {KMS_DATA_KEY_SIZE} bytes, got {len(plaintext)}"
        self.kms_key_id = key_id
        self.data_key = bytes(plaintext)
        return {"KMSCipherTextKey": base64.b64encode(blob).decode("ascii"),
                "KMSCipherTextHash": None}

    def _fast_path(self, params: Any, mine: FastPath) -> Any:
        try:
            offer = FastPath.from_params(params)
        except PayloadError as exc:
            return str(exc)
        self.fast_path = offer.agree(mine)
        return self.fast_path.to_params()

    def receive_complete(self, payload: bytes) -> SessionParams:
        """Read HandshakeComplete (PayloadType 7) and return the settled parameters."""
        try:
            complete = HandshakeComplete.from_json(payload)
        except PayloadError as exc:
            raise HandshakeFailed(f"invalid HandshakeComplete: {exc}") from None
        if self.session_type is None:
            # What the plugin prints before exiting (client spec §7.6).
            raise HandshakeFailed("unable to determine SessionType")
        mode, keepalive = _resolve_port(self.session_type, self.properties, self.agent_version,
                                        self.client_version)
        return SessionParams(self.session_type, self.properties, self.agent_version,
                             self.client_version, mode, self.fast_path,
                             complete.customer_message, keepalive)
