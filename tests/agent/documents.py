"""Session documents as the server sends them in `interactive_shell` (agent spec §10.3)."""

from __future__ import annotations

import copy
from typing import Any

INPUTS: dict[str, Any] = {
    "s3BucketName": "", "s3KeyPrefix": "", "s3EncryptionEnabled": True,
    "cloudWatchLogGroupName": "", "cloudWatchEncryptionEnabled": True,
    "cloudWatchStreamingEnabled": False, "idleSessionTimeout": "20", "maxSessionDuration": "",
    "kmsKeyId": "", "runAsEnabled": False, "runAsDefaultUser": "",
    "shellProfile": {"windows": "", "linux": ""},
}

PORT_PATTERN = r"^([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"


def shell(**inputs: Any) -> dict[str, Any]:
    merged = copy.deepcopy(INPUTS)
    merged.update(inputs)
    return {"name": "SSM-SessionManagerRunShell", "content": {
        "schemaVersion": "1.0", "description": "shell", "sessionType": "Standard_Stream",
        "inputs": merged}}


def _commands(session_type: str, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    linux = {"commands": "{{ command }}", "runAsElevated": False, **extra}
    return {"name": name, "content": {
        "schemaVersion": "1.0", "description": name, "sessionType": session_type,
        "inputs": copy.deepcopy(INPUTS),
        "parameters": {"command": {"type": "String", "description": "command"}},
        "properties": {"windows": {"commands": "{{ command }}"}, "linux": linux,
                       "macos": {"commands": "{{ command }}"}}}}


def interactive_commands() -> dict[str, Any]:
    return _commands("InteractiveCommands", "AWS-StartInteractiveCommand", {})


def non_interactive_commands(**extra: Any) -> dict[str, Any]:
    return _commands("NonInteractiveCommands", "AWS-StartNonInteractiveCommand", extra)


def ssh() -> dict[str, Any]:
    return {"name": "AWS-StartSSHSession", "content": {
        "schemaVersion": "1.0", "description": "ssh", "sessionType": "Port",
        "parameters": {"portNumber": {"type": "String", "default": "22",
                                      "allowedPattern": PORT_PATTERN}},
        "properties": {"portNumber": "{{ portNumber }}"}}}


def port_forwarding(remote: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {
        "portNumber": {"type": "String", "default": "80", "allowedPattern": PORT_PATTERN},
        "localPortNumber": {"type": "String", "default": "0"},
    }
    props = {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
             "localPortNumber": "{{ localPortNumber }}"}
    name = "AWS-StartPortForwardingSession"
    if remote:
        params["host"] = {"type": "String"}
        props["host"] = "{{ host }}"
        name = "AWS-StartPortForwardingSessionToRemoteHost"
    return {"name": name, "content": {
        "schemaVersion": "1.0", "description": name, "sessionType": "Port",
        "parameters": params, "properties": props}}
