"""Turning an `interactive_shell` task into a resolved session (agent spec §10.3).

The session document arrives with `{{ name }}` placeholders in `properties` and `inputs`;
the agent fills them from the task's Parameters (or the document's defaults), checks each
parameter's `allowedPattern`, and validates the shapes the session plugins rely on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from portless.protocol.payloads import AgentTaskPayload, SessionType

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_EXACT_PLACEHOLDER = re.compile(r"^\{\{\s*([^{}]*?)\s*\}\}$")


class DocumentError(Exception):
    """The task cannot be run; the text becomes the session's failure Output."""


def as_bool(value: Any) -> bool:
    """Inputs that Go reads as bool-or-string: true, "true", "True"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return False


@dataclass(slots=True)
class SessionSpec:
    """A task whose document has been validated and whose parameters are substituted."""

    session_id: str
    document_name: str
    session_type: str
    inputs: dict[str, Any]
    properties: Any
    run_as_user: str = ""
    session_owner: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def kms_key_id(self) -> str:
        value = self.inputs.get("kmsKeyId")
        return value if isinstance(value, str) else ""

    @property
    def run_as_enabled(self) -> bool:
        return as_bool(self.inputs.get("runAsEnabled", False))

    @property
    def run_as_default_user(self) -> str:
        value = self.inputs.get("runAsDefaultUser")
        return value.strip() if isinstance(value, str) else ""

    @property
    def shell_profile(self) -> str:
        profile = self.inputs.get("shellProfile")
        if isinstance(profile, dict):
            value = profile.get("linux")
            if isinstance(value, str):
                return value
        return ""

    def linux_properties(self) -> dict[str, Any]:
        """`properties.linux` for the command types (an empty dict when absent)."""
        props = self.properties if isinstance(self.properties, dict) else {}
        linux = props.get("linux")
        return linux if isinstance(linux, dict) else {}

    def port_properties(self) -> dict[str, str]:
        """`properties` of a Port session with every value a string, as the plugins expect."""
        props = self.properties if isinstance(self.properties, dict) else {}
        out: dict[str, str] = {}
        for key, value in props.items():
            if value is None:
                continue
            if isinstance(value, list):
                if len(value) != 1:
                    raise DocumentError(
                        f"Unable to remarshal session properties: {key} must be a single value")
                value = value[0]
            out[str(key)] = value if isinstance(value, str) else json.dumps(value)
        return out


def resolve_task(task: AgentTaskPayload) -> SessionSpec:
    """Validate the document and substitute its parameters; raises DocumentError."""
    doc = task.document_content
    if not isinstance(doc, dict):
        raise DocumentError("DocumentContent is not an object")
    schema = doc.get("schemaVersion")
    if schema != "1.0":
        raise DocumentError(f"Unsupported session document schema version {schema!r}")
    session_type = doc.get("sessionType")
    if session_type not in SessionType.ALL:
        raise DocumentError(f"Unsupported session type {session_type!r}")
    inputs = doc.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise DocumentError("Document inputs must be an object")
    declared = doc.get("parameters") or {}
    if not isinstance(declared, dict):
        raise DocumentError("Document parameters must be an object")

    values: dict[str, Any] = {}
    for name, definition in declared.items():
        definition = definition if isinstance(definition, dict) else {}
        if name in task.parameters:
            value: Any = task.parameters[name]
        elif "default" in definition:
            value = definition["default"]
        else:
            raise DocumentError(f"Parameter {name} has no value and no default")
        _check_pattern(name, value, definition.get("allowedPattern"))
        _check_allowed(name, value, definition.get("allowedValues"))
        values[name] = value
    # Parameters the task carries without a declaration are still usable as placeholders.
    for name, value in task.parameters.items():
        values.setdefault(name, value)

    properties = _substitute(doc.get("properties"), values)
    resolved_inputs = _substitute(inputs, values)
    assert isinstance(resolved_inputs, dict)
    return SessionSpec(
        session_id=task.session_id,
        document_name=task.document_name,
        session_type=str(session_type),
        inputs=resolved_inputs,
        properties=properties,
        run_as_user=task.run_as_user.strip(),
        session_owner=task.session_owner,
        parameters=values,
    )


def _check_pattern(name: str, value: Any, pattern: Any) -> None:
    if not isinstance(pattern, str) or not pattern:
        return
    try:
        regex = re.compile(pattern)
    except re.error:
        raise DocumentError(f"Parameter {name} has an invalid allowedPattern") from None
    items = value if isinstance(value, list) else [value]
    for item in items:
        text = item if isinstance(item, str) else json.dumps(item)
        if regex.search(text) is None:
            raise DocumentError(
                f"Parameter value for {name} does not match the allowed pattern {pattern}")


def _check_allowed(name: str, value: Any, allowed: Any) -> None:
    if not isinstance(allowed, list) or not allowed:
        return
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item not in allowed:
            raise DocumentError(f"Parameter value {item!r} for {name} is not an allowed value")


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if not isinstance(node, str) or "{{" not in node:
        return node
    exact = _EXACT_PLACEHOLDER.match(node)
    if exact and _known(exact.group(1), values):
        return values[exact.group(1)]

    def replace(match: re.Match[str]) -> str:
        if not _known(match.group(1), values):
            return match.group(0)
        value = values[match.group(1)]
        return value if isinstance(value, str) else json.dumps(value)

    return _PLACEHOLDER.sub(replace, node)


def _known(name: str, values: dict[str, Any]) -> bool:
    """Whether a placeholder names a parameter; unknown ones are left as they are."""
    if name.startswith("ssm:"):
        raise DocumentError(f"SSM parameter references are not supported: {{{{{name}}}}}")
    return name in values
