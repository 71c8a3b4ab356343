"""`portless admin …` on a server's data directory: the same operations as the IAM API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from portless.iam import totp
from portless.iam.authorizer import Authorizer, ensure_admin
from portless.iam.principal import Caller
from portless.server.admin import main as admin_main
from portless.server.bootstrap import bootstrap
from portless.store import SecretBox, Store

POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*"}],
    }
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory as `portless server` leaves it after its first start."""

    async def _init() -> None:
        store = await Store.open(
            f"sqlite+aiosqlite:///{tmp_path / 'portless.db'}",
            secret_box=SecretBox.from_file(tmp_path / "secret.key"),
        )
        try:
            await bootstrap(store, tmp_path / "credentials")
            await ensure_admin(store, "admin")  # what the server's first start does too
        finally:
            await store.close()

    asyncio.run(_init())
    return tmp_path


def admin(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = admin_main([*args, "--data-dir", str(data_dir)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_give_a_colleague_access_and_take_it_away(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin(data_dir, capsys, "user", "create", "alice", "--tag", "team=blue")[0] == 0
    rc, out, _ = admin(data_dir, capsys, "user", "list")
    assert rc == 0 and out.splitlines()[0].split() == [
        "NAME", "ID", "GROUPS", "KEYS", "TAGS", "CREATED",
    ]  # fmt: skip
    assert any(line.startswith("alice") and "team=blue" in line for line in out.splitlines())
    rc, out, _ = admin(data_dir, capsys, "key", "create", "alice")
    assert rc == 0 and "aws_secret_access_key = " in out
    key_id = next(w for w in out.split() if w.startswith("AKIA"))

    assert admin(data_dir, capsys, "group", "create", "operators")[0] == 0
    assert admin(data_dir, capsys, "group", "add-user", "operators", "alice")[0] == 0
    assert admin(data_dir, capsys, "policy", "put-group", "operators", "connect",
                 "--document", POLICY)[0] == 0  # fmt: skip
    assert admin(data_dir, capsys, "policy", "attach-user", "alice",
                 "AmazonSSMReadOnlyAccess")[0] == 0  # fmt: skip
    rc, out, _ = admin(data_dir, capsys, "policy", "list", "--user", "alice")
    assert "AmazonSSMReadOnlyAccess" in out and "via group operators" in out and "connect" in out
    rc, out, _ = admin(data_dir, capsys, "group", "list")
    assert "operators  alice" in out

    async def allowed() -> bool:
        store = await Store.open(
            f"sqlite+aiosqlite:///{data_dir / 'portless.db'}",
            secret_box=SecretBox.from_file(data_dir / "secret.key"),
        )
        try:
            user = await store.get_user("alice")
            assert user is not None
            caller = Caller("user", "alice", user.arn, key_id, user.user_id)
            node = f"arn:aws:ssm:us-east-1:{user.arn.split(':')[4]}:managed-instance/mi-1"
            return (await Authorizer(store).decide(caller, "ssm:StartSession", node)).allowed
        finally:
            await store.close()

    assert asyncio.run(allowed())
    assert admin(data_dir, capsys, "group", "remove-user", "operators", "alice")[0] == 0
    assert not asyncio.run(allowed())

    rc, out, _ = admin(data_dir, capsys, "key", "deactivate", key_id)
    assert rc == 0 and "Inactive" in out
    rc, out, _ = admin(data_dir, capsys, "key", "list", "alice")
    assert key_id in out and "Inactive" in out
    assert admin(data_dir, capsys, "key", "activate", key_id)[0] == 0

    # IAM's rules hold here too.
    rc, _, err = admin(data_dir, capsys, "user", "delete", "alice")
    assert rc == 1 and err.strip() == (
        "portless admin: DeleteConflict: Cannot delete entity, must delete access keys first."
    )
    assert admin(data_dir, capsys, "key", "delete", key_id)[0] == 0
    assert admin(data_dir, capsys, "user", "delete", "alice", "--force")[0] == 0
    rc, out, _ = admin(data_dir, capsys, "user", "list")
    assert "alice" not in out


def test_policies_tags_and_mfa(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin(data_dir, capsys, "user", "create", "bob")
    rc, out, _ = admin(data_dir, capsys, "policy", "create", "Connect", "--document", POLICY)
    assert rc == 0 and ":policy/Connect" in out
    rc, out, _ = admin(data_dir, capsys, "policy", "list")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"AdministratorAccess", "AmazonSSMManagedInstanceCore", "Connect"} <= set(lines)
    assert lines["AdministratorAccess"].split()[2] == "1"  # the administrator has it
    assert admin(data_dir, capsys, "policy", "attach-user", "bob", "Connect")[0] == 0
    assert admin(data_dir, capsys, "policy", "detach-user", "bob", "Connect")[0] == 0
    policy_file = data_dir / "p.json"
    policy_file.write_text(POLICY)
    assert admin(data_dir, capsys, "policy", "put-user", "bob", "inline",
                 "--file", str(policy_file))[0] == 0  # fmt: skip
    rc, _, err = admin(data_dir, capsys, "policy", "put-user", "bob", "bad",
                       "--document", '{"Statement": {"Effect": "Allow"}}')  # fmt: skip
    assert rc == 1 and err.startswith("portless admin: MalformedPolicyDocument: ")
    assert admin(data_dir, capsys, "policy", "attach-role", "SSMRole",
                 "AmazonSSMManagedInstanceCore")[0] == 0  # fmt: skip

    rc, out, _ = admin(data_dir, capsys, "user", "tag", "bob", "SSMSessionRunAs=ec2-user")
    assert rc == 0 and "SSMSessionRunAs=ec2-user" in out
    rc, out, _ = admin(data_dir, capsys, "user", "tag", "bob", "--remove", "SSMSessionRunAs")
    assert "(no tags)" in out

    rc, out, _ = admin(data_dir, capsys, "mfa", "create", "bob-phone")
    assert rc == 0
    seed = next(line.split()[1] for line in out.splitlines() if line.startswith("seed"))
    raw = totp.decode_secret(seed)
    step = totp.time_step(time.time())
    rc, _, err = admin(data_dir, capsys, "mfa", "enable", "bob", "bob-phone", "000000", "000000")
    assert rc == 1 and "InvalidAuthenticationCode" in err
    rc, out, _ = admin(data_dir, capsys, "mfa", "enable", "bob", "bob-phone",
                       totp.hotp(raw, step - 1), totp.hotp(raw, step))  # fmt: skip
    assert rc == 0, out
    rc, out, _ = admin(data_dir, capsys, "mfa", "list", "--user", "bob")
    assert ":mfa/bob-phone" in out and "bob" in out


def test_clear_errors(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "nothing-here"
    rc, _, err = admin(empty, capsys, "user", "list")
    assert rc == 1 and "no server data in" in err and len(err.strip().splitlines()) == 1
    rc, _, err = admin(data_dir, capsys, "user", "tag", "nobody", "a=b")
    assert rc == 1 and err.strip() == (
        "portless admin: NoSuchEntity: The user with name nobody cannot be found."
    )
    rc, _, err = admin(data_dir, capsys, "user", "create", "bad name")
    assert rc == 1
    rc, _, err = admin(data_dir, capsys, "key", "deactivate", "AKIANOSUCHKEY0000000")
    assert rc == 1 and "no access key AKIANOSUCHKEY0000000" in err
    rc, _, err = admin(data_dir, capsys, "user", "delete", "admin")
    assert rc == 1 and "administrator" in err
    rc, out, _ = admin(data_dir, capsys, "credentials")
    assert rc == 0 and out.strip() == str(data_dir / "credentials")
