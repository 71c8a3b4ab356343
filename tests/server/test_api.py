"""The SSM JSON API driven by boto3 (real SigV4): operations, validation and error codes."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from unittest import mock

import botocore.auth
import pytest
from botocore.exceptions import ClientError

from portless.aws.sigv4 import sign_request
from tests.server.conftest import REGION, ServerThread


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_bootstrap_credentials_file(server: ServerThread) -> None:
    path = server.config.data_dir / "credentials"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("[portless]\n")
    key, _secret = server.credentials()
    assert key.startswith("AKIA") and len(key) == 20
    assert len(server.ctx.account_id) == 12 and server.ctx.account_id.isdigit()


def test_request_id_and_empty_describe(server: ServerThread) -> None:
    out = server.ssm().describe_instance_information()
    assert out["InstanceInformationList"] == []
    assert out["ResponseMetadata"]["RequestId"]
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_activations(server: ServerThread) -> None:
    ssm = server.ssm()
    act = ssm.create_activation(IamRole="SSMRole", Description="lab", RegistrationLimit=3,
                                DefaultInstanceName="web",
                                Tags=[{"Key": "env", "Value": "test"}])
    assert len(act["ActivationId"]) == 36
    assert len(act["ActivationCode"]) >= 20 and act["ActivationCode"].isalnum()
    listed = ssm.describe_activations(
        Filters=[{"FilterKey": "ActivationIds", "FilterValues": [act["ActivationId"]]}])
    (item,) = listed["ActivationList"]
    assert item["Description"] == "lab" and item["RegistrationLimit"] == 3
    assert item["RegistrationsCount"] == 0 and item["Expired"] is False
    assert item["Tags"] == [{"Key": "env", "Value": "test"}]
    ssm.delete_activation(ActivationId=act["ActivationId"])
    with pytest.raises(ClientError) as exc:
        ssm.delete_activation(ActivationId=act["ActivationId"])
    assert code_of(exc) == "InvalidActivationId"


def test_validation_errors(server: ServerThread) -> None:
    ssm = server.ssm(validate=False)
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target="mi-0123456789abcdef0", Reason="x" * 257)
    assert code_of(exc) == "ValidationException"
    assert "at 'reason' failed to satisfy constraint" in str(exc.value)
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target="")
    assert code_of(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target="mi-0123456789abcdef0", DocumentName="a b")
    assert code_of(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information(MaxResults=4)
    assert code_of(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information(
            InstanceInformationFilterList=[{"key": "Nope", "valueSet": ["x"]}])
    assert code_of(exc) == "InvalidFilterKey"
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information(
            Filters=[{"Key": "PingStatus", "Values": ["Sleeping"]}])
    assert code_of(exc) == "InvalidInstanceInformationFilterValue"
    with pytest.raises(ClientError) as exc:
        ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": ["bogus"]}])
    assert code_of(exc) == "InvalidInstanceId"
    with pytest.raises(ClientError) as exc:
        ssm.describe_sessions(State="Active", Filters=[{"key": "Colour", "value": "x"}])
    assert code_of(exc) == "InvalidFilterKey"
    with pytest.raises(ClientError) as exc:
        ssm.describe_sessions(State="Active", NextToken="garbage")
    assert code_of(exc) == "InvalidNextToken"
    with pytest.raises(ClientError) as exc:
        ssm.describe_sessions(State="Sometimes")
    assert code_of(exc) == "ValidationException"


def test_disconnected_and_unknown_targets(server: ServerThread) -> None:
    ssm = server.ssm()
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target="mi-0123456789abcdef0")
    assert code_of(exc) == "TargetNotConnected"
    assert exc.value.response["Error"]["Message"] == "mi-0123456789abcdef0 is not connected."
    status = ssm.get_connection_status(Target="mi-0123456789abcdef0")
    assert status["Status"] == "notconnected"
    with pytest.raises(ClientError) as exc:
        ssm.start_session(Target="mi-0123456789abcdef0", DocumentName="No-Such-Document")
    assert code_of(exc) == "InvalidDocument"
    with pytest.raises(ClientError) as exc:
        ssm.resume_session(SessionId="admin-0123456789abcdef0")
    assert code_of(exc) == "DoesNotExistException"
    assert ssm.terminate_session(SessionId="admin-0123456789abcdef0")["SessionId"] == \
        "admin-0123456789abcdef0"


def test_bad_signature_unknown_key_expired(server: ServerThread) -> None:
    key, secret = server.credentials()
    with pytest.raises(ClientError) as exc:
        server.ssm(key=(key, secret + "x")).describe_instance_information()
    assert code_of(exc) == "InvalidSignatureException"
    with pytest.raises(ClientError) as exc:
        server.ssm(key=("AKIAUNKNOWNUNKNOWN00", secret)).describe_instance_information()
    assert code_of(exc) == "UnrecognizedClientException"
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=skewed), \
            pytest.raises(ClientError) as exc:
        server.ssm().describe_instance_information()
    assert code_of(exc) == "InvalidSignatureException"
    assert "Signature expired" in str(exc.value)


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _send(req: urllib.request.Request) -> Reply:
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


def _raw(server: ServerThread, target: str | None, body: bytes = b"{}", *,
         sign: bool = True, service: str = "ssm") -> Reply:
    url = server.url + "/"
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    if sign:
        key, secret = server.credentials()
        headers.update(sign_request("POST", url, headers, body, key, secret, None, REGION,
                                    service, dt.datetime.now(dt.UTC)))
    return _send(urllib.request.Request(url, data=body, headers=headers, method="POST"))


def test_unknown_operation_and_bad_bodies(server: ServerThread) -> None:
    resp = _raw(server, "AmazonSSM.DoSomethingStrange")
    assert resp.status_code == 400
    assert resp.json()["__type"] == "UnknownOperationException"
    assert resp.headers["x-amzn-RequestId"]
    resp = _raw(server, "Nope.Nothing")
    assert resp.json()["__type"] == "UnknownOperationException"
    resp = _raw(server, "AmazonSSM.DescribeSessions", b"{not json")
    assert resp.json()["__type"] == "SerializationException"
    resp = _raw(server, "AmazonSSM.DescribeSessions", b'{"State": "Active"}', sign=False)
    assert resp.status_code == 400
    assert resp.json()["__type"] == "MissingAuthenticationTokenException"
    resp = _raw(server, "TrentService.Decrypt", service="kms")
    assert resp.json()["__type"] == "UnknownOperationException"
    resp = _send(urllib.request.Request(server.url + "/nothing-here"))
    assert resp.status_code == 404 and "__type" in resp.json()
    # A request signed for another service is refused.
    resp = _raw(server, "AmazonSSM.DescribeSessions", b'{"State": "Active"}', service="ec2")
    assert resp.json()["__type"] == "InvalidSignatureException"


def _session_doc(**inputs: Any) -> str:
    return json.dumps({"schemaVersion": "1.0", "description": "prefs",
                       "sessionType": "Standard_Stream", "inputs": inputs})


def test_documents(server: ServerThread) -> None:
    ssm = server.ssm()
    # The AWS-managed documents exist by name.
    for name in ("AWS-StartSSHSession", "AWS-StartPortForwardingSession",
                 "AWS-StartPortForwardingSessionToRemoteHost", "AWS-StartInteractiveCommand",
                 "AWS-StartNonInteractiveCommand", "SSM-SessionManagerRunShell"):
        got = ssm.get_document(Name=name)
        assert json.loads(got["Content"])["schemaVersion"] == "1.0"
        assert got["DocumentType"] == "Session"
    desc = ssm.describe_document(Name="AWS-StartPortForwardingSession")["Document"]
    params = {p["Name"]: p for p in desc["Parameters"]}
    assert params["portNumber"]["DefaultValue"] == "80"
    assert params["localPortNumber"]["DefaultValue"] == "0"
    with pytest.raises(ClientError) as exc:
        ssm.create_document(Name="AWS-Mine", Content=_session_doc(), DocumentType="Session")
    assert code_of(exc) == "ValidationException"

    # Users override the preferences document, as seed 002 does with Terraform.
    created = ssm.create_document(Name="SSM-SessionManagerRunShell", DocumentType="Session",
                                  DocumentFormat="JSON", Content=_session_doc(
                                      idleSessionTimeout="20", runAsEnabled=True,
                                      runAsDefaultUser="ops"))["DocumentDescription"]
    assert created["DocumentVersion"] == "1" and created["Owner"] == server.ctx.account_id
    with pytest.raises(ClientError) as exc:
        ssm.create_document(Name="SSM-SessionManagerRunShell", DocumentType="Session",
                            Content=_session_doc())
    assert code_of(exc) == "DocumentAlreadyExists"
    updated = ssm.update_document(Name="SSM-SessionManagerRunShell", DocumentVersion="$LATEST",
                                  Content=_session_doc(idleSessionTimeout="5"))
    assert updated["DocumentDescription"]["DocumentVersion"] == "2"
    with pytest.raises(ClientError) as exc:
        ssm.update_document(Name="SSM-SessionManagerRunShell", DocumentVersion="$LATEST",
                            Content=_session_doc(idleSessionTimeout="5"))
    assert code_of(exc) == "DuplicateDocumentContent"
    got = ssm.get_document(Name="SSM-SessionManagerRunShell")
    assert json.loads(got["Content"])["inputs"]["idleSessionTimeout"] == "5"
    assert ssm.get_document(Name="SSM-SessionManagerRunShell", DocumentVersion="1")[
        "DocumentVersion"] == "1"
    with pytest.raises(ClientError) as exc:
        ssm.create_document(Name="Bad-Session", DocumentType="Session",
                            Content='{"schemaVersion": "1.0", "sessionType": "Telepathy"}')
    assert code_of(exc) == "InvalidDocumentContent"
    with pytest.raises(ClientError) as exc:
        ssm.create_document(Name="Bad-Json", DocumentType="Session", Content="{")
    assert code_of(exc) == "InvalidDocumentContent"

    names = {d["Name"] for d in ssm.list_documents(
        Filters=[{"Key": "DocumentType", "Values": ["Session"]}])["DocumentIdentifiers"]}
    assert {"AWS-StartSSHSession", "SSM-SessionManagerRunShell"} <= names
    own = {d["Name"] for d in ssm.list_documents(
        Filters=[{"Key": "Owner", "Values": ["Self"]}])["DocumentIdentifiers"]}
    assert own == {"SSM-SessionManagerRunShell"}
    ssm.delete_document(Name="SSM-SessionManagerRunShell")
    with pytest.raises(ClientError) as exc:
        ssm.delete_document(Name="AWS-StartSSHSession")
    assert code_of(exc) == "InvalidDocumentOperation"
    with pytest.raises(ClientError) as exc:
        ssm.get_document(Name="Nothing-Here")
    assert code_of(exc) == "InvalidDocument"
    # Updating the implicit preferences document creates the account's copy.
    out = ssm.update_document(Name="SSM-SessionManagerRunShell", DocumentVersion="$LATEST",
                              Content=_session_doc(idleSessionTimeout="7"))
    assert out["DocumentDescription"]["DocumentVersion"] == "2"


def test_tags_unknown_resources(server: ServerThread) -> None:
    ssm = server.ssm()
    with pytest.raises(ClientError) as exc:
        ssm.add_tags_to_resource(ResourceType="ManagedInstance",
                                 ResourceId="mi-0123456789abcdef0",
                                 Tags=[{"Key": "a", "Value": "b"}])
    assert code_of(exc) == "InvalidResourceId"
    with pytest.raises(ClientError) as exc:
        ssm.list_tags_for_resource(ResourceType="PatchBaseline", ResourceId="pb-1")
    assert code_of(exc) == "InvalidResourceType"


def test_audit_events_recorded(server: ServerThread) -> None:
    ssm = server.ssm()
    ssm.describe_sessions(State="History")
    key, secret = server.credentials()
    with pytest.raises(ClientError):
        server.ssm(key=(key, secret + "x")).describe_sessions(State="History")
    server.run(server.ctx.authorizer.flush())
    events = server.run(server.ctx.store.list_audit_events(limit=100))
    actions = [(e.action, e.decision) for e in events]
    assert ("ssm:DescribeSessions", "allowed") in actions
    assert ("ssm:DescribeSessions", "denied") in actions
    assert server.run(server.ctx.store.verify_audit_chain()) is None
