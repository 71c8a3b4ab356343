"""First start: the installation's account id, the administrator and its credentials file.

The account id lives in the administrator's ARN (`arn:aws:iam::ACCOUNT:user/admin`),
so it is stored in the database with everything else and stays stable across
restarts and replicas.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from portless.aws.arn import Arn, iam_user_arn
from portless.store import AlreadyExistsError, Store

ADMIN_USER = "admin"
PROFILE = "portless"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    account_id: str
    admin_created: bool
    access_key_id: str | None


def new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def write_credentials(path: Path, access_key_id: str, secret: str) -> None:
    """AWS shared-credentials file, profile [portless], mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"[{PROFILE}]\naws_access_key_id = {access_key_id}\n"
            f"aws_secret_access_key = {secret}\n")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def bootstrap(store: Store, credentials_path: Path) -> Bootstrap:
    """Create the administrator on first start; (re)write its credentials file if missing."""
    admin = await store.get_user(ADMIN_USER)
    created = False
    if admin is None:
        account = new_account_id()
        try:
            admin = await store.create_user(ADMIN_USER, arn=str(iam_user_arn(account,
                                                                              ADMIN_USER)))
            created = True
        except AlreadyExistsError:  # another replica won the race
            admin = await store.get_user(ADMIN_USER)
            assert admin is not None
    account_id = Arn.parse(admin.arn).account
    keys = [k for k in await store.list_access_keys(ADMIN_USER) if k.status == "Active"]
    if not keys:
        made = await store.create_access_key(ADMIN_USER)
        write_credentials(credentials_path, made.key.access_key_id, made.secret_access_key)
        return Bootstrap(account_id, created, made.key.access_key_id)
    if not credentials_path.exists():
        full = await store.get_access_key(keys[0].access_key_id)
        if full is not None:
            write_credentials(credentials_path, full.key.access_key_id, full.secret_access_key)
    return Bootstrap(account_id, created, keys[0].access_key_id)
