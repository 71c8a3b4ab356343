"""Session documents: the AWS-managed ones by name, parsing, parameters, preferences.

A Session document (client spec §1.4, agent spec §10.3) has `schemaVersion`
"1.0", a `sessionType`, optional `inputs` (preferences), `parameters` (name →
{type, default, allowedPattern, …}) and `properties`.  StartSession validates
the caller's parameters against the document, flattens them to scalar strings
(the stock agent's port plugin fails on lists), and merges the preferences
document's `inputs` with the JSON types the agent's Go decoder demands.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from dataclasses import dataclass
from typing import Any

from portless.aws.errors import AwsError

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
DEFAULT_DOCUMENT = PREFERENCES_DOCUMENT
SESSION_TYPES = frozenset({"Standard_Stream", "InteractiveCommands", "NonInteractiveCommands",
                           "Port"})
SHELL_TYPES = frozenset({"Standard_Stream", "InteractiveCommands", "NonInteractiveCommands"})
RESERVED_PREFIXES = ("aws", "amazon", "amzn")

DEFAULT_IDLE_MINUTES = 20

_PORT_PATTERN = (r"^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
                 r"|655[0-2][0-9]|6553[0-5])$")
_LOCAL_PORT_PATTERN = (r"^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
                       r"|655[0-2][0-9]|6553[0-5])$")
_HOST_PATTERN = r"^[a-zA-Z0-9_.:\-\[\]%]{1,253}$"

DEFAULT_INPUTS: dict[str, Any] = {
    "s3BucketName": "",
    "s3KeyPrefix": "",
    "s3EncryptionEnabled": True,
    "cloudWatchLogGroupName": "",
    "cloudWatchEncryptionEnabled": True,
    "cloudWatchStreamingEnabled": False,
    "idleSessionTimeout": str(DEFAULT_IDLE_MINUTES),
    "maxSessionDuration": "",
    "kmsKeyId": "",
    "runAsEnabled": False,
    "runAsDefaultUser": "",
    "shellProfile": {"windows": "", "linux": ""},
}


def _command_properties() -> dict[str, Any]:
    return {os_name: {"commands": "{{ command }}", "runAsElevated": False}
            for os_name in ("windows", "linux", "macos")}


BUILTIN_DOCUMENTS: dict[str, dict[str, Any]] = {
    PREFERENCES_DOCUMENT: {
        "schemaVersion": "1.0",
        "description": "Document to hold regional settings for Session Manager",
        "sessionType": "Standard_Stream",
        "inputs": DEFAULT_INPUTS,
    },
    "AWS-StartSSHSession": {
        "schemaVersion": "1.0",
        "description": "Document to start SSH session",
        "sessionType": "Port",
        "parameters": {
            "portNumber": {
                "type": "String",
                "description": "(Optional) Port number of SSH server on the instance",
                "allowedPattern": _PORT_PATTERN,
                "default": "22",
            },
        },
        "properties": {"portNumber": "{{ portNumber }}"},
    },
    "AWS-StartPortForwardingSession": {
        "schemaVersion": "1.0",
        "description": "Document to start port forwarding session over Session Manager",
        "sessionType": "Port",
        "parameters": {
            "portNumber": {
                "type": "String",
                "description": "(Optional) Port number of the server on the instance",
                "allowedPattern": _PORT_PATTERN,
                "default": "80",
            },
            "localPortNumber": {
                "type": "String",
                "description": "(Optional) Port number on local machine to forward traffic to. "
                               "An open port is chosen at run-time if not provided",
                "allowedPattern": _LOCAL_PORT_PATTERN,
                "default": "0",
            },
        },
        "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
                       "localPortNumber": "{{ localPortNumber }}"},
    },
    "AWS-StartPortForwardingSessionToRemoteHost": {
        "schemaVersion": "1.0",
        "description": "Document to start port forwarding session over Session Manager to a "
                       "remote host",
        "sessionType": "Port",
        "parameters": {
            "host": {
                "type": "String",
                "description": "(Required) The IP address or DNS name of the remote host",
                "allowedPattern": _HOST_PATTERN,
            },
            "portNumber": {
                "type": "String",
                "description": "(Optional) Port number of the remote host",
                "allowedPattern": _PORT_PATTERN,
                "default": "80",
            },
            "localPortNumber": {
                "type": "String",
                "description": "(Optional) Port number on local machine to forward traffic to. "
                               "An open port is chosen at run-time if not provided",
                "allowedPattern": _LOCAL_PORT_PATTERN,
                "default": "0",
            },
        },
        "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
                       "host": "{{ host }}", "localPortNumber": "{{ localPortNumber }}"},
    },
    "AWS-StartInteractiveCommand": {
        "schemaVersion": "1.0",
        "description": "Document to run a single interactive command on an instance",
        "sessionType": "InteractiveCommands",
        "parameters": {
            "command": {"type": "String", "description": "The command to run on the instance"},
        },
        "properties": _command_properties(),
    },
    "AWS-StartNonInteractiveCommand": {
        "schemaVersion": "1.0",
        "description": "Document to run a single non-interactive command on an instance",
        "sessionType": "NonInteractiveCommands",
        "parameters": {
            "command": {"type": "String", "description": "The command to run on the instance"},
        },
        "properties": _command_properties(),
    },
}


def is_builtin(name: str) -> bool:
    return name in BUILTIN_DOCUMENTS


def is_reserved_name(name: str) -> bool:
    return name.lower().startswith(RESERVED_PREFIXES)


def builtin_content(name: str) -> str:
    return json.dumps(BUILTIN_DOCUMENTS[name], indent=2)


# ------------------------------------------------------------------ parsing


def parse_content(content: str, document_format: str = "JSON") -> dict[str, Any]:
    """Parse document text (JSON, or YAML when PyYAML is available) into an object."""
    fmt = (document_format or "JSON").upper()
    obj: Any
    if fmt == "YAML":
        try:
            yaml = importlib.import_module("yaml")
        except ImportError:  # pragma: no cover - depends on the environment
            raise AwsError("InvalidDocumentContent",
                           "YAML documents are not supported by this server", 400) from None
        try:
            obj = yaml.safe_load(content)
        except Exception as exc:
            raise AwsError("InvalidDocumentContent", f"YAML is not valid: {exc}", 400) from None
    elif fmt == "JSON":
        try:
            obj = json.loads(content)
        except ValueError as exc:
            raise AwsError("InvalidDocumentContent", f"JSON not well-formed. {exc}",
                           400) from None
    else:
        raise AwsError("InvalidDocumentContent",
                       f"Document format {document_format} is not supported", 400)
    if not isinstance(obj, dict):
        raise AwsError("InvalidDocumentContent", "Document content must be an object", 400)
    return obj


def validate_session_document(doc: dict[str, Any]) -> None:
    """Check what the agent will check, so a bad document fails at CreateDocument."""
    schema = doc.get("schemaVersion")
    if schema != "1.0":
        raise AwsError("InvalidDocumentSchemaVersion",
                       f"Session document schemaVersion must be 1.0, got {schema!r}", 400)
    stype = doc.get("sessionType")
    if stype not in SESSION_TYPES:
        raise AwsError("InvalidDocumentContent",
                       f"sessionType must be one of {', '.join(sorted(SESSION_TYPES))}", 400)
    for key in ("inputs", "parameters", "properties"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], dict):
            raise AwsError("InvalidDocumentContent", f"{key} must be an object", 400)
    params = doc.get("parameters") or {}
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise AwsError("InvalidDocumentContent", f"parameter {name} must be an object", 400)
        pattern = spec.get("allowedPattern")
        if pattern is not None:
            try:
                re.compile(str(pattern))
            except re.error:
                raise AwsError("InvalidDocumentContent",
                               f"allowedPattern of parameter {name} is not a valid regular "
                               "expression", 400) from None
    inputs = doc.get("inputs")
    if isinstance(inputs, dict):
        normalize_inputs(inputs)  # raises on wrong types


def document_parameters(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The `Parameters` list of a DocumentDescription."""
    out: list[dict[str, str]] = []
    for name, spec in (doc.get("parameters") or {}).items():
        if not isinstance(spec, dict):
            continue
        item = {"Name": name, "Type": str(spec.get("type", "String"))}
        if spec.get("description"):
            item["Description"] = str(spec["description"])
        if "default" in spec:
            default = spec["default"]
            item["DefaultValue"] = default if isinstance(default, str) else json.dumps(default)
        out.append(item)
    return out


# --------------------------------------------------------------- parameters


def _invalid(message: str) -> AwsError:
    return AwsError("InvalidParameters", message, 400)


def resolve_parameters(doc: dict[str, Any], given: dict[str, list[str]] | None) -> dict[str, str]:
    """Validate StartSession `Parameters` against `doc` and flatten them to strings.

    Unknown names, pattern mismatches and missing required values raise
    InvalidParameters.  Defaults fill the gaps.  A list value with several items is
    joined with commas (StringList semantics); the agent wants scalars.
    """
    specs: dict[str, Any] = doc.get("parameters") or {}
    given = given or {}
    out: dict[str, str] = {}
    for name, values in given.items():
        if name not in specs:
            raise _invalid(f"Parameter {name} is not defined in the document. "
                           f"Valid parameters: {', '.join(sorted(specs)) or 'none'}")
        spec = specs[name] if isinstance(specs[name], dict) else {}
        pattern = spec.get("allowedPattern")
        allowed = spec.get("allowedValues")
        for value in values:
            if pattern is not None and re.search(str(pattern), value) is None:
                raise _invalid(f"Parameter \"{name}\" value \"{value}\" does not match the "
                               f"allowed pattern {pattern}")
            if isinstance(allowed, list) and allowed and value not in [str(a) for a in allowed]:
                raise _invalid(f"Parameter \"{name}\" value \"{value}\" is not one of the "
                               "allowed values")
        out[name] = ",".join(values)
    for name, spec in specs.items():
        if name in out:
            continue
        if isinstance(spec, dict) and "default" in spec:
            default = spec["default"]
            if isinstance(default, list):
                out[name] = ",".join(str(v) for v in default)
            elif isinstance(default, str):
                out[name] = default
            else:
                out[name] = json.dumps(default)
        else:
            raise _invalid(f"Parameter \"{name}\" is required but was not provided")
    return out


# ------------------------------------------------------------------- inputs


def _as_bool(value: Any, key: str, *, strings_ok: bool = True) -> bool:
    if isinstance(value, bool):
        return value
    if strings_ok and isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        return value.strip().lower() == "true"
    raise AwsError("InvalidDocumentContent", f"inputs.{key} must be a boolean", 400)


def _as_str(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        raise AwsError("InvalidDocumentContent", f"inputs.{key} must be a string", 400)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise AwsError("InvalidDocumentContent", f"inputs.{key} must be a string", 400)


def normalize_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """Preferences with the JSON types the agent's decoder accepts (agent spec §10.3)."""
    out = copy.deepcopy(DEFAULT_INPUTS)
    for key, value in inputs.items():
        if key in ("s3EncryptionEnabled", "cloudWatchEncryptionEnabled", "runAsEnabled") or key == "cloudWatchStreamingEnabled":
            out[key] = _as_bool(value, key)
        elif key == "shellProfile":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise AwsError("InvalidDocumentContent", "inputs.shellProfile must be an object",
                               400)
            out[key] = {"windows": _as_str(value.get("windows", ""), "shellProfile.windows"),
                        "linux": _as_str(value.get("linux", ""), "shellProfile.linux")}
        elif key in ("idleSessionTimeout", "maxSessionDuration"):
            text = _as_str(value, key).strip()
            if text and not re.fullmatch(r"[0-9]+", text):
                raise AwsError("InvalidDocumentContent", f"inputs.{key} must be a number of "
                               "minutes", 400)
            out[key] = text
        elif key in DEFAULT_INPUTS:
            out[key] = _as_str(value, key)
        else:
            out[key] = value
    return out


def agent_inputs(prefs: dict[str, Any]) -> dict[str, Any]:
    """What goes to the agent: KMS off (we do not serve KMS), S3/CloudWatch empty.

    Recording happens at the relay, so the agent must neither upload nor demand
    bucket/log-group encryption.
    """
    out = normalize_inputs(prefs)
    out["kmsKeyId"] = ""
    out["s3BucketName"] = ""
    out["s3KeyPrefix"] = ""
    out["s3EncryptionEnabled"] = False
    out["cloudWatchLogGroupName"] = ""
    out["cloudWatchEncryptionEnabled"] = False
    out["cloudWatchStreamingEnabled"] = False
    return out


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle_minutes: int
    max_minutes: int | None


def session_limits(inputs: dict[str, Any]) -> SessionLimits:
    idle_text = str(inputs.get("idleSessionTimeout") or "").strip()
    max_text = str(inputs.get("maxSessionDuration") or "").strip()
    idle = int(idle_text) if idle_text.isdigit() and int(idle_text) > 0 else DEFAULT_IDLE_MINUTES
    maximum = int(max_text) if max_text.isdigit() and int(max_text) > 0 else None
    return SessionLimits(idle, maximum)


@dataclass(frozen=True, slots=True)
class PreparedSession:
    """A session document resolved for one StartSession."""

    document_name: str
    session_type: str
    content: dict[str, Any]      # DocumentContent for the agent
    parameters: dict[str, str]   # flattened
    limits: SessionLimits
    inputs: dict[str, Any]       # the preferences as the user wrote them (normalized)


def prepare_session(document_name: str, doc: dict[str, Any], preferences: dict[str, Any],
                    given: dict[str, list[str]] | None) -> PreparedSession:
    """Merge the preferences into `doc`, validate parameters, compute the limits."""
    try:
        validate_session_document(doc)
    except AwsError as exc:
        raise AwsError("InvalidDocument", f"Document {document_name} is not a valid session "
                       f"document: {exc.message}", 400) from None
    params = resolve_parameters(doc, given)
    pref_inputs = preferences.get("inputs") if isinstance(preferences.get("inputs"), dict) else {}
    merged: dict[str, Any] = dict(pref_inputs or {})
    own = doc.get("inputs")
    if isinstance(own, dict):
        merged.update(own)
    user_inputs = normalize_inputs(merged)
    content: dict[str, Any] = {
        "schemaVersion": "1.0",
        "description": str(doc.get("description", "")),
        "sessionType": doc["sessionType"],
        "inputs": agent_inputs(merged),
    }
    if doc.get("parameters"):
        content["parameters"] = copy.deepcopy(doc["parameters"])
    if doc.get("properties") is not None:
        content["properties"] = copy.deepcopy(doc["properties"])
    return PreparedSession(document_name, str(doc["sessionType"]), content, params,
                           session_limits(user_inputs), user_inputs)
