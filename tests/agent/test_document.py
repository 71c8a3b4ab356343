"""Resolving the session document of an `interactive_shell` task (agent spec §10.3)."""

from __future__ import annotations

import pytest

from portless.agent.sessions.document import DocumentError, resolve_task
from portless.protocol.payloads import AgentTaskPayload
from tests.agent import documents


def task(doc: dict[str, object], **params: str) -> AgentTaskPayload:
    content = doc or documents.port_forwarding(remote=True)["content"]
    assert isinstance(content, dict)
    return AgentTaskPayload("s-0123456789abcdef0", "Doc", content, dict(params))


def test_placeholders_take_values_and_defaults() -> None:
    spec = resolve_task(task({}, portNumber="8080", host="db.internal"))
    assert spec.session_type == "Port"
    assert spec.port_properties() == {"portNumber": "8080", "type": "LocalPortForwarding",
                                      "localPortNumber": "0", "host": "db.internal"}


def test_allowed_pattern_is_enforced() -> None:
    with pytest.raises(DocumentError, match="allowed pattern"):
        resolve_task(task({}, portNumber="99999", host="x"))


def test_missing_value_without_default_fails() -> None:
    with pytest.raises(DocumentError, match="host"):
        resolve_task(task({}, portNumber="22"))


def test_list_parameters_from_the_api_are_flattened() -> None:
    payload = AgentTaskPayload.from_dict({
        "SessionId": "s-1", "DocumentName": "AWS-StartSSHSession",
        "DocumentContent": documents.ssh()["content"], "Parameters": {"portNumber": ["2222"]}})
    assert resolve_task(payload).port_properties() == {"portNumber": "2222"}


def test_text_substitution_and_typed_inputs() -> None:
    doc = documents.interactive_commands()["content"]
    spec = resolve_task(task(doc, command="echo {{ not-a-parameter }} && uname -a"))
    assert spec.linux_properties()["commands"] == "echo {{ not-a-parameter }} && uname -a"
    shell = documents.shell(runAsEnabled="true", runAsDefaultUser=" alice ")["content"]
    spec = resolve_task(task(shell))
    assert spec.run_as_enabled and spec.run_as_default_user == "alice"


@pytest.mark.parametrize(("key", "value", "match"), [
    ("schemaVersion", "2.2", "schema version"),
    ("sessionType", "Telnet", "session type"),
])
def test_bad_documents(key: str, value: str, match: str) -> None:
    doc = dict(documents.shell()["content"])
    doc[key] = value
    with pytest.raises(DocumentError, match=match):
        resolve_task(task(doc))
