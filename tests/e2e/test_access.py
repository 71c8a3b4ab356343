"""Identity and access with the AWS CLI against real nodes: the seeds' policies, MFA, revocation.

Every user, key, group and policy is made with `aws iam …` as an operator would;
every check is an `aws ssm …` call (or a real shell session) made with that
user's credentials.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from portless.iam.totp import decode_secret, totp
from tests.e2e.harness import Agent, Server, start_node
from tests.seed_policies import (
    SEED_001_BROWSE,
    SEED_001_CONFIGURE,
    SEED_001_CONNECT,
    SEED_004_PER_INSTANCE,
)

pytestmark = pytest.mark.e2e

Creds = dict[str, str]


@pytest.fixture(scope="module")
def second_node(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    agent = start_node(server, tmp_path_factory.mktemp("agent-b"))
    yield agent
    agent.stop()


def aws(server: Server, creds: Creds | None, *args: str,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the AWS CLI as the administrator (creds None) or as the given user."""
    env = server.env()
    if creds is not None:
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_SHARED_CREDENTIALS_FILE", None)
        env.update(creds)
    return subprocess.run(["aws", *args, "--endpoint-url", server.url, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=timeout)


def ok(out: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def denied(out: subprocess.CompletedProcess[str], action: str) -> None:
    assert out.returncode == 255, out.stdout
    assert "(AccessDeniedException)" in out.stderr, out.stderr
    assert f"is not authorized to perform: {action}" in out.stderr, out.stderr


def make_user(server: Server, name: str, policy: str | None = None) -> Creds:
    ok(aws(server, None, "iam", "create-user", "--user-name", name))
    if policy is not None:
        ok(aws(server, None, "iam", "put-user-policy", "--user-name", name,
               "--policy-name", f"{name}-access", "--policy-document", policy))
    key = ok(aws(server, None, "iam", "create-access-key", "--user-name", name))["AccessKey"]
    assert isinstance(key, dict)
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def shell_session(server: Server, creds: Creds, target: str) -> str:
    """A real shell through `aws ssm start-session` as this user; returns the session id."""
    env = server.env()
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SHARED_CREDENTIALS_FILE", None)
    env.update(creds)
    child = pexpect.spawn("aws", ["ssm", "start-session", "--target", target,
                                  "--endpoint-url", server.url], env=env, timeout=30)
    child.expect(r"Starting session with SessionId: (\S+)")
    session_id = child.match.group(1).decode()
    child.sendline("echo reached-$((20+1))")
    child.expect("reached-21")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    return session_id


# ---------------------------------------------------------------- seed 001, verbatim


PREFERENCES = json.dumps({
    "schemaVersion": "1.0", "description": "team preferences",
    "sessionType": "Standard_Stream",
    "inputs": {"idleSessionTimeout": "15", "shellProfile": {"windows": "", "linux": ""}},
})


def test_seed_001_connect_only_policy(server: Server, node: Agent) -> None:
    user = make_user(server, "seed1-connect", SEED_001_CONNECT)
    info = ok(aws(server, user, "ssm", "describe-instance-information"))
    assert node.instance_id in json.dumps(info)
    status = ok(aws(server, user, "ssm", "get-connection-status", "--target", node.instance_id))
    assert status["Status"] == "connected"
    assert shell_session(server, user, node.instance_id).startswith("seed1-connect-")
    denied(aws(server, user, "ssm", "describe-sessions", "--state", "History"),
           "ssm:DescribeSessions")
    denied(aws(server, user, "ssm", "create-document", "--name", "seed1-prefs",
               "--document-type", "Session", "--content", PREFERENCES), "ssm:CreateDocument")
    denied(aws(server, user, "ssm", "terminate-session", "--session-id", "admin-0"),
           "ssm:TerminateSession")


def test_seed_001_session_viewer_policy(server: Server, node: Agent) -> None:
    user = make_user(server, "seed1-viewer", SEED_001_BROWSE)
    session_id = shell_session(server, user, node.instance_id)
    history = ok(aws(server, user, "ssm", "describe-sessions", "--state", "History",
                     "--filters", f"key=SessionId,value={session_id}"))
    assert [s["SessionId"] for s in history["Sessions"]] == [session_id]  # type: ignore[index,union-attr]
    denied(aws(server, user, "ssm", "create-document", "--name", "seed1-viewer-prefs",
               "--document-type", "Session", "--content", PREFERENCES), "ssm:CreateDocument")
    denied(aws(server, user, "ssm", "create-activation", "--iam-role", "SSMRole"),
           "ssm:CreateActivation")


def test_seed_001_configurer_policy(server: Server, node: Agent) -> None:
    user = make_user(server, "seed1-config", SEED_001_CONFIGURE)
    ok(aws(server, user, "ssm", "create-document", "--name", "seed1-config-prefs",
           "--document-type", "Session", "--content", PREFERENCES))
    got = ok(aws(server, user, "ssm", "get-document", "--name", "seed1-config-prefs"))
    assert json.loads(str(got["Content"]))["inputs"]["idleSessionTimeout"] == "15"
    ok(aws(server, user, "ssm", "delete-document", "--name", "seed1-config-prefs"))
    assert shell_session(server, user, node.instance_id).startswith("seed1-config-")
    # IAM needs a grant of its own (and answers in the query protocol's `AccessDenied`).
    iam = aws(server, user, "iam", "list-users")
    assert iam.returncode == 255 and "(AccessDenied)" in iam.stderr, iam.stderr
    assert "is not authorized to perform: iam:ListUsers" in iam.stderr


# ---------------------------------------------------------------- seed 004


def node_arn(server: Server, instance_id: str) -> str:
    account = ok(aws(server, None, "sts", "get-caller-identity"))["Account"]
    return f"arn:aws:ssm:us-east-1:{account}:managed-instance/{instance_id}"


def test_seed_004_per_instance_policy(server: Server, node: Agent, second_node: Agent) -> None:
    # Seed 004 word for word, except that its first listed instance ARN names our
    # node (its EC2 ARNs name machines that do not exist here).
    policy = SEED_004_PER_INSTANCE.replace(
        "arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890EXAMPLE",
        node_arn(server, node.instance_id))
    user = make_user(server, "seed4", policy)
    own = shell_session(server, user, node.instance_id)
    assert own.startswith("seed4-")
    denied(aws(server, user, "ssm", "start-session", "--target", second_node.instance_id),
           "ssm:StartSession")

    # A live session of our own can be ended; one started by the administrator cannot.
    env = server.env()
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SHARED_CREDENTIALS_FILE", None)
    env.update(user)
    child = pexpect.spawn("aws", ["ssm", "start-session", "--target", node.instance_id,
                                  "--endpoint-url", server.url], env=env, timeout=30)
    child.expect(r"Starting session with SessionId: (\S+)")
    live = child.match.group(1).decode()
    ok(aws(server, user, "ssm", "terminate-session", "--session-id", live))
    child.expect(f"Exiting session with sessionId: {re.escape(live)}")
    child.expect(pexpect.EOF)

    admin_child = pexpect.spawn("aws", ["ssm", "start-session", "--target", node.instance_id,
                                        "--endpoint-url", server.url], env=server.env(),
                                timeout=30)
    admin_child.expect(r"Starting session with SessionId: (\S+)")
    admins = admin_child.match.group(1).decode()
    try:
        denied(aws(server, user, "ssm", "terminate-session", "--session-id", admins),
               "ssm:TerminateSession")
    finally:
        admin_child.sendline("exit")
        admin_child.expect(pexpect.EOF)


# ---------------------------------------------------------------- MFA

MFA_REQUIRED = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Action": ["ssm:StartSession", "ssm:DescribeInstanceInformation",
                   "ssm:TerminateSession"],
        "Resource": "*",
        "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}},
    }],
})


def test_mfa_required_policy(server: Server, node: Agent, tmp_path: Path) -> None:
    user = make_user(server, "mfa-carol", MFA_REQUIRED)
    seed_file = tmp_path / "seed.txt"
    device = ok(aws(server, None, "iam", "create-virtual-mfa-device",
                    "--virtual-mfa-device-name", "mfa-carol", "--outfile", str(seed_file),
                    "--bootstrap-method", "Base32StringSeed"))
    serial = str(device["VirtualMFADevice"]["SerialNumber"])  # type: ignore[index]
    key = decode_secret(seed_file.read_text().strip())
    now = time.time()
    ok(aws(server, None, "iam", "enable-mfa-device", "--user-name", "mfa-carol",
           "--serial-number", serial, "--authentication-code1", totp(key, now - 30),
           "--authentication-code2", totp(key, now)))

    # Plain access keys carry no MFA: refused.
    denied(aws(server, user, "ssm", "describe-instance-information"),
           "ssm:DescribeInstanceInformation")

    # A wrong code is refused.
    right = totp(key, now + 30)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    bad = aws(server, user, "sts", "get-session-token", "--serial-number", serial,
              "--token-code", wrong)
    assert bad.returncode == 255 and "AccessDenied" in bad.stderr, bad.stderr

    # A valid code gives temporary credentials that carry MFA.
    token = ok(aws(server, user, "sts", "get-session-token", "--serial-number", serial,
                   "--token-code", right))["Credentials"]
    assert isinstance(token, dict)
    mfa_user = {"AWS_ACCESS_KEY_ID": token["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": token["SecretAccessKey"],
                "AWS_SESSION_TOKEN": token["SessionToken"]}
    assert node.instance_id in json.dumps(
        ok(aws(server, mfa_user, "ssm", "describe-instance-information")))
    assert shell_session(server, mfa_user, node.instance_id).startswith("mfa-carol-")

    # The same code again is refused.
    reused = aws(server, user, "sts", "get-session-token", "--serial-number", serial,
                 "--token-code", right)
    assert reused.returncode == 255 and "AccessDenied" in reused.stderr, reused.stderr


# ---------------------------------------------------------------- revocation

GROUP_POLICY = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow",
                   "Action": ["ssm:StartSession", "ssm:DescribeInstanceInformation"],
                   "Resource": "*"}],
})


def test_revocation_takes_effect_on_the_next_call(server: Server, node: Agent) -> None:
    user = make_user(server, "revoke-dave")
    ok(aws(server, None, "iam", "create-group", "--group-name", "operators"))
    ok(aws(server, None, "iam", "put-group-policy", "--group-name", "operators",
           "--policy-name", "operate", "--policy-document", GROUP_POLICY))
    ok(aws(server, None, "iam", "add-user-to-group", "--group-name", "operators",
           "--user-name", "revoke-dave"))
    assert shell_session(server, user, node.instance_id).startswith("revoke-dave-")

    # Out of the group that granted access: the next StartSession is refused.
    ok(aws(server, None, "iam", "remove-user-from-group", "--group-name", "operators",
           "--user-name", "revoke-dave"))
    denied(aws(server, user, "ssm", "start-session", "--target", node.instance_id),
           "ssm:StartSession")

    # Back in, then the key is deactivated: the next call is refused outright.
    ok(aws(server, None, "iam", "add-user-to-group", "--group-name", "operators",
           "--user-name", "revoke-dave"))
    assert shell_session(server, user, node.instance_id).startswith("revoke-dave-")
    ok(aws(server, None, "iam", "update-access-key", "--user-name", "revoke-dave",
           "--access-key-id", user["AWS_ACCESS_KEY_ID"], "--status", "Inactive"))
    out = aws(server, user, "ssm", "start-session", "--target", node.instance_id)
    assert out.returncode == 255
    assert "UnrecognizedClientException" in out.stderr, out.stderr
