"""Typed JSON payloads carried in messages, with the exact field names and JSON types.

The peers decode with Go's encoding/json, which fails on a wrong JSON type (a
number where a string is expected, a float where an integer is), often silently
stalling the session; so every class here pins its field types.  References:
client spec §5, §7; agent spec §10, §11.
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from portless.protocol.message import (
    FLAGS_SINGLE_SHOT,
    Message,
    MessageType,
    PayloadType,
)


class PayloadError(ValueError):
    """A payload that does not decode into the expected shape."""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _loads(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: a peer can nest brackets deeply enough to exhaust the stack.
        raise PayloadError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PayloadError("payload is not a JSON object")
    return obj


def _get(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """Field lookup that matches names case-insensitively, as the Go peers do."""
    if name in obj:
        value = obj[name]
    else:
        lower = name.lower()
        for key, val in obj.items():
            if key.lower() == lower:
                value = val
                break
        else:
            if default is ...:
                raise PayloadError(f"missing field {name}")
            return default
    if value is None and default is not ...:
        return default
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) and kind is int:
        raise PayloadError(f"field {name} must be an integer")
    if not isinstance(value, kind):
        raise PayloadError(f"field {name} has the wrong JSON type")
    return value


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --------------------------------------------------------------------------- acks


@dataclass(slots=True)
class Acknowledge:
    """Per-message acknowledgement; receivers match only the sequence number."""

    message_type: str
    message_id: str
    sequence_number: int
    is_sequential: bool = True

    def to_json(self) -> bytes:
        # Key order as the plugin produces it (client spec §5.2).
        return _dumps({
            "AcknowledgedMessageType": self.message_type,
            "AcknowledgedMessageId": self.message_id,
            "AcknowledgedMessageSequenceNumber": self.sequence_number,
            "IsSequentialMessage": self.is_sequential,
        })

    @classmethod
    def from_json(cls, data: bytes) -> Acknowledge:
        obj = _loads(data)
        return cls(
            message_type=_get(obj, "AcknowledgedMessageType", str, ""),
            message_id=_get(obj, "AcknowledgedMessageId", str, ""),
            sequence_number=_get(obj, "AcknowledgedMessageSequenceNumber", int),
            is_sequential=_get(obj, "IsSequentialMessage", bool, True),
        )

    @classmethod
    def for_message(cls, msg: Message) -> Acknowledge:
        return cls(msg.message_type, msg.id_str, msg.sequence_number)

    def to_message(self) -> Message:
        return Message(MessageType.ACKNOWLEDGE, 0, FLAGS_SINGLE_SHOT, PayloadType.NONE,
                       self.to_json())


# ------------------------------------------------------------------ channel_closed


@dataclass(slots=True)
class ChannelClosed:
    """Ends a session; sent to the client and (to cancel) to the agent."""

    session_id: str
    destination_id: str = ""
    output: str = ""
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_date: str = field(default_factory=iso_now)
    schema_version: int = 1

    def to_json(self) -> bytes:
        return _dumps({
            "MessageType": MessageType.CHANNEL_CLOSED,
            "MessageId": self.message_id,
            "DestinationId": self.destination_id,
            "SessionId": self.session_id,
            "SchemaVersion": self.schema_version,
            # CreatedDate must be a JSON string: a number makes the agent drop the message.
            "CreatedDate": self.created_date,
            "Output": self.output,
        })

    @classmethod
    def from_json(cls, data: bytes) -> ChannelClosed:
        obj = _loads(data)
        return cls(
            session_id=_get(obj, "SessionId", str, ""),
            destination_id=_get(obj, "DestinationId", str, ""),
            output=_get(obj, "Output", str, ""),
            message_id=_get(obj, "MessageId", str, ""),
            created_date=str(_get(obj, "CreatedDate", (str, int, float), "")),
            schema_version=_get(obj, "SchemaVersion", int, 1),
        )

    def to_message(self) -> Message:
        return Message(MessageType.CHANNEL_CLOSED, 0, FLAGS_SINGLE_SHOT, PayloadType.NONE,
                       self.to_json())


# ------------------------------------------------------------------- handshake


class ActionStatus(IntEnum):
    SUCCESS = 1
    FAILED = 2
    UNSUPPORTED = 3


class ActionType:
    SESSION_TYPE = "SessionType"
    KMS_ENCRYPTION = "KMSEncryption"
    # portless extension: a stock client answers it like any unknown action (ActionStatus 0,
    # ActionResult 3, client spec §7.4), which is how a portless agent learns the fast path
    # is off.
    PORTLESS_FAST_PATH = "PortlessFastPath"


class SessionType:
    STANDARD_STREAM = "Standard_Stream"
    INTERACTIVE_COMMANDS = "InteractiveCommands"
    NON_INTERACTIVE_COMMANDS = "NonInteractiveCommands"
    PORT = "Port"
    ALL = frozenset({STANDARD_STREAM, INTERACTIVE_COMMANDS, NON_INTERACTIVE_COMMANDS, PORT})


@dataclass(slots=True)
class RequestedAction:
    action_type: str
    parameters: Any


@dataclass(slots=True)
class HandshakeRequest:
    agent_version: str
    actions: list[RequestedAction]

    def to_json(self) -> bytes:
        return _dumps({
            "AgentVersion": self.agent_version,
            "RequestedClientActions": [
                {"ActionType": a.action_type, "ActionParameters": a.parameters}
                for a in self.actions
            ],
        })

    @classmethod
    def from_json(cls, data: bytes) -> HandshakeRequest:
        obj = _loads(data)
        actions = []
        for raw in _get(obj, "RequestedClientActions", list, []):
            if not isinstance(raw, dict):
                raise PayloadError("RequestedClientActions entries must be objects")
            actions.append(RequestedAction(_get(raw, "ActionType", str),
                                           _get(raw, "ActionParameters", object, None)))
        return cls(_get(obj, "AgentVersion", str, ""), actions)


@dataclass(slots=True)
class ProcessedAction:
    action_type: str
    status: int
    result: Any = None
    error: str = ""


@dataclass(slots=True)
class HandshakeResponse:
    client_version: str
    actions: list[ProcessedAction]
    errors: list[str] | None = None

    def to_json(self) -> bytes:
        return _dumps({
            "ClientVersion": self.client_version,
            "ProcessedClientActions": [
                {"ActionType": a.action_type, "ActionStatus": int(a.status),
                 "ActionResult": a.result, "Error": a.error}
                for a in self.actions
            ],
            "Errors": self.errors,
        })

    @classmethod
    def from_json(cls, data: bytes) -> HandshakeResponse:
        obj = _loads(data)
        actions = []
        for raw in _get(obj, "ProcessedClientActions", list, []):
            if not isinstance(raw, dict):
                raise PayloadError("ProcessedClientActions entries must be objects")
            actions.append(ProcessedAction(
                _get(raw, "ActionType", str, ""),
                _get(raw, "ActionStatus", int, 0),
                _get(raw, "ActionResult", object, None),
                _get(raw, "Error", str, ""),
            ))
        errors = _get(obj, "Errors", list, None)
        if errors is not None and not all(isinstance(e, str) for e in errors):
            raise PayloadError("Errors must be a list of strings")
        return cls(_get(obj, "ClientVersion", str, ""), actions, errors)


@dataclass(slots=True)
class HandshakeComplete:
    time_to_complete_ns: int
    customer_message: str = ""

    def to_json(self) -> bytes:
        # An integer: a float here stalls the plugin forever (client spec §7.6).
        return _dumps({"HandshakeTimeToComplete": int(self.time_to_complete_ns),
                       "CustomerMessage": self.customer_message})

    @classmethod
    def from_json(cls, data: bytes) -> HandshakeComplete:
        obj = _loads(data)
        return cls(_get(obj, "HandshakeTimeToComplete", int, 0),
                   _get(obj, "CustomerMessage", str, ""))


@dataclass(slots=True)
class EncChallenge:
    """EncChallengeRequest (type 8) and EncChallengeResponse (type 9): base64 text."""

    challenge: str

    def to_json(self) -> bytes:
        return _dumps({"Challenge": self.challenge})

    @classmethod
    def from_json(cls, data: bytes) -> EncChallenge:
        return cls(_get(_loads(data), "Challenge", str))


# ---------------------------------------------------------------- stream extras


@dataclass(slots=True)
class TerminalSize:
    cols: int
    rows: int

    def to_json(self) -> bytes:
        return _dumps({"cols": self.cols, "rows": self.rows})

    @classmethod
    def from_json(cls, data: bytes) -> TerminalSize:
        obj = _loads(data)
        cols, rows = _get(obj, "cols", int), _get(obj, "rows", int)
        if not (0 <= cols < 2**32 and 0 <= rows < 2**32):
            raise PayloadError("terminal size out of range")
        return cls(cols, rows)


class Flag(IntEnum):
    DISCONNECT_TO_PORT = 1
    TERMINATE_SESSION = 2
    CONNECT_TO_PORT_ERROR = 3


def encode_flag(flag: int) -> bytes:
    return struct.pack(">I", flag)


def decode_flag(data: bytes) -> int:
    if len(data) != 4:
        raise PayloadError(f"flag payload must be 4 bytes, got {len(data)}")
    value: int = struct.unpack(">I", data)[0]
    return value


EXIT_CODE_PREFIX = "EXIT_CODE: "


def encode_exit_code(code: int) -> bytes:
    return f"{EXIT_CODE_PREFIX}{code}".encode()


def decode_exit_code(data: bytes) -> int:
    text = data.decode("ascii", "replace").strip()
    if not text.startswith(EXIT_CODE_PREFIX.strip()):
        raise PayloadError("not an EXIT_CODE payload")
    try:
        return int(text[len(EXIT_CODE_PREFIX.strip()):].strip())
    except ValueError:
        raise PayloadError("EXIT_CODE is not an integer") from None


@dataclass(slots=True)
class AgentSessionState:
    session_id: str
    state: str  # "Connected" | "Terminating"
    schema_version: int = 1

    def to_json(self) -> bytes:
        return _dumps({"SchemaVersion": self.schema_version, "SessionState": self.state,
                       "SessionId": self.session_id})

    @classmethod
    def from_json(cls, data: bytes) -> AgentSessionState:
        obj = _loads(data)
        return cls(_get(obj, "SessionId", str, ""), _get(obj, "SessionState", str),
                   _get(obj, "SchemaVersion", int, 1))

    def to_message(self) -> Message:
        return Message(MessageType.AGENT_SESSION_STATE, 0, FLAGS_SINGLE_SHOT,
                       PayloadType.NONE, self.to_json())


# ------------------------------------------------------------ opening frames


@dataclass(slots=True)
class OpenDataChannel:
    """First (text) frame on a data channel, from the client or the agent."""

    token: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = ""
    client_version: str | None = None       # client only (newer plugins)
    client_instance_id: str | None = None   # agent only

    def to_json(self) -> str:
        obj: dict[str, Any] = {"MessageSchemaVersion": "1.0", "RequestId": self.request_id,
                               "TokenValue": self.token}
        if self.client_instance_id is not None:
            obj["ClientInstanceId"] = self.client_instance_id
        obj["ClientId"] = self.client_id
        if self.client_version is not None:
            obj["ClientVersion"] = self.client_version
        return json.dumps(obj, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> OpenDataChannel:
        obj = _loads(data.encode() if isinstance(data, str) else data)
        return cls(
            token=_get(obj, "TokenValue", str),
            request_id=_get(obj, "RequestId", str, ""),
            client_id=_get(obj, "ClientId", str, ""),
            client_version=_get(obj, "ClientVersion", str, None),
            client_instance_id=_get(obj, "ClientInstanceId", str, None),
        )


@dataclass(slots=True)
class OpenControlChannel:
    token: str
    agent_version: str
    platform_type: str = "linux"
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> str:
        return json.dumps({"Cookie": None, "MessageSchemaVersion": "1.0",
                           "RequestId": self.request_id, "TokenValue": self.token,
                           "AgentVersion": self.agent_version,
                           "PlatformType": self.platform_type}, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> OpenControlChannel:
        obj = _loads(data.encode() if isinstance(data, str) else data)
        return cls(_get(obj, "TokenValue", str), _get(obj, "AgentVersion", str, ""),
                   _get(obj, "PlatformType", str, ""), _get(obj, "RequestId", str, ""))


# ------------------------------------------------------- control channel bodies


@dataclass(slots=True)
class AgentTaskPayload:
    """What `interactive_shell` asks the agent to run (agent spec §10.3)."""

    session_id: str
    document_name: str
    document_content: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    run_as_user: str = ""
    session_owner: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"SessionId": self.session_id, "DocumentName": self.document_name,
                "DocumentContent": self.document_content, "Parameters": self.parameters,
                "RunAsUser": self.run_as_user, "SessionOwner": self.session_owner}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> AgentTaskPayload:
        params = _get(obj, "Parameters", dict, {})
        return cls(
            session_id=_get(obj, "SessionId", str),
            document_name=_get(obj, "DocumentName", str, ""),
            document_content=_get(obj, "DocumentContent", dict),
            # The stock agent needs scalar strings; tolerate the API's list form too.
            parameters={str(k): (v[0] if isinstance(v, list) and v else v)
                        for k, v in params.items()},
            run_as_user=_get(obj, "RunAsUser", str, ""),
            session_owner=_get(obj, "SessionOwner", str, ""),
        )


@dataclass(slots=True)
class InteractiveShell:
    """Control-channel `interactive_shell`: JSON wrapping the task payload as a string."""

    task: AgentTaskPayload
    topic: str = "aws.ssm.startSession"

    def to_json(self) -> bytes:
        return _dumps({"Content": json.dumps(self.task.to_dict(), separators=(",", ":")),
                       "TaskId": self.task.session_id, "Topic": self.topic,
                       "SchemaVersion": 1})

    @classmethod
    def from_json(cls, data: bytes) -> InteractiveShell:
        obj = _loads(data)
        content = _get(obj, "Content", str)
        return cls(AgentTaskPayload.from_dict(_loads(content.encode())),
                   _get(obj, "Topic", str, ""))

    def to_message(self) -> Message:
        return Message(MessageType.INTERACTIVE_SHELL, 0, 0, PayloadType.NONE, self.to_json())


@dataclass(slots=True)
class AgentTaskComplete:
    session_id: str
    instance_id: str
    final_status: str = "Success"   # Success | Failed | Cancelled | TimedOut
    output: str = ""
    retry_number: int = 1

    def to_json(self) -> bytes:
        return _dumps({
            "SchemaVersion": 1, "TaskId": self.session_id, "Topic": "agent_task_complete",
            "FinalTaskStatus": self.final_status, "IsRoutingFailure": False,
            "AwsAccountId": "", "InstanceId": self.instance_id, "Output": self.output,
            "S3Bucket": "", "S3UrlSuffix": "", "CwlGroup": "", "CwlStream": "",
            "RetryNumber": self.retry_number,
        })

    @classmethod
    def from_json(cls, data: bytes) -> AgentTaskComplete:
        obj = _loads(data)
        return cls(_get(obj, "TaskId", str), _get(obj, "InstanceId", str, ""),
                   _get(obj, "FinalTaskStatus", str, "Success"), _get(obj, "Output", str, ""),
                   _get(obj, "RetryNumber", int, 1))

    def to_message(self) -> Message:
        return Message(MessageType.AGENT_TASK_COMPLETE, 0, 0, PayloadType.NONE, self.to_json())


@dataclass(slots=True)
class AgentTaskAcknowledge:
    message_id: str
    session_id: str

    def to_json(self) -> bytes:
        return _dumps({"SchemaVersion": 1, "MessageId": self.message_id,
                       "TaskId": self.session_id, "Topic": "agent_task_complete"})

    @classmethod
    def from_json(cls, data: bytes) -> AgentTaskAcknowledge:
        obj = _loads(data)
        return cls(_get(obj, "MessageId", str), _get(obj, "TaskId", str, ""))

    def to_message(self) -> Message:
        return Message(MessageType.AGENT_TASK_ACKNOWLEDGE, 0, 0, PayloadType.NONE,
                       self.to_json())
