"""`portless admin`: identities and policies, for an operator on the server machine.

Works directly on the server's database and key file (``--data-dir``, ``--db-url``; the same
defaults as ``portless server``: ``$PORTLESS_DATA_DIR`` or ``~/.local/share/portless``, the
SQLite file ``portless.db`` and ``secret.key`` in it), with the same rules and errors as the
IAM API (:class:`portless.iam.service.IamService`). Changes count on the server's next call.

    portless admin user create|list|delete|tag
    portless admin group create|list|add-user|remove-user
    portless admin key create|list|deactivate|activate|delete
    portless admin policy put-user|put-group|attach-user|detach-user|attach-group|create|list
    portless admin mfa create|enable|list
    portless admin credentials
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from portless.aws.arn import Arn
from portless.aws.errors import AwsError
from portless.iam import totp
from portless.iam.service import IamService
from portless.server.config import ServerConfig, default_data_dir
from portless.store import AccessKeyStatus, SecretBox, Store, StoreError
from portless.store.iam import PrincipalKind

__all__ = ["AdminError", "main"]

ADMIN_USER = "admin"  # the user `portless server` creates at first start
KEY_FILE = "secret.key"
CREDENTIALS_FILE = "credentials"


class AdminError(Exception):
    """A one-line error for the operator."""


# --------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; empty cells as ``-``."""
    body = [[c if c else "-" for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *body]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        cells.append(row[-1])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def tags_text(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


# --------------------------------------------------------------------------- arguments


def parse_tags(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AdminError(f"tags are KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def read_document(args: argparse.Namespace) -> str:
    if args.document is not None:
        text = str(args.document)
    elif args.file is not None:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        except OSError as exc:
            raise AdminError(f"cannot read {args.file}: {exc.strerror}") from None
    else:  # pragma: no cover - argparse requires one
        raise AdminError("give the policy with --document JSON or --file PATH")
    try:
        json.loads(text)
    except ValueError as exc:
        raise AdminError(f"the policy document is not JSON: {exc}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="server state directory (default $PORTLESS_DATA_DIR or ~/.local/share/portless)",
    )
    common.add_argument(
        "--db-url",
        default=argparse.SUPPRESS,
        help="database URL (default: portless.db in the data directory)",
    )
    parser = argparse.ArgumentParser(
        prog="portless admin",
        parents=[common],
        description="Manage users, groups, keys, policies and MFA devices of a portless server.",
    )
    groups = parser.add_subparsers(dest="area", required=True, metavar="AREA")

    def area(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        p = groups.add_parser(name, help=help_text, parents=[common])
        return p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
    ) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    def with_document(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--document", help="the policy as JSON text")
        src.add_argument("--file", help="read the policy from a file ('-' for stdin)")

    users = area("user", "users")
    p = verb(users, "create", "create a user")
    p.add_argument("name")
    p.add_argument("--path", default="/")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    verb(users, "list", "list users")
    p = verb(users, "delete", "delete a user")
    p.add_argument("name")
    p.add_argument(
        "--force", action="store_true", help="also delete its keys, policies, memberships"
    )
    p = verb(users, "tag", "set or remove tags (e.g. SSMSessionRunAs=ec2-user)")
    p.add_argument("name")
    p.add_argument("tags", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--remove", action="append", default=[], metavar="KEY")

    grp = area("group", "groups")
    p = verb(grp, "create", "create a group")
    p.add_argument("name")
    p.add_argument("--path", default="/")
    verb(grp, "list", "list groups and their members")
    for name, help_text in (("add-user", "add a user"), ("remove-user", "remove a user")):
        p = verb(grp, name, help_text + " to/from a group")
        p.add_argument("group")
        p.add_argument("user")

    keys = area("key", "access keys")
    p = verb(keys, "create", "create an access key (the secret is shown once)")
    p.add_argument("user")
    p = verb(keys, "list", "list access keys")
    p.add_argument("user", nargs="?")
    for name in ("deactivate", "activate", "delete"):
        p = verb(keys, name, f"{name} an access key")
        p.add_argument("access_key_id")

    pol = area("policy", "policies")
    for name, kind in (("put-user", "user"), ("put-group", "group")):
        p = verb(pol, name, f"create or replace an inline policy of a {kind}")
        p.add_argument(kind)
        p.add_argument("policy_name")
        with_document(p)
    for name, kind in (
        ("attach-user", "user"),
        ("detach-user", "user"),
        ("attach-group", "group"),
        ("detach-group", "group"),
        ("attach-role", "role"),
        ("detach-role", "role"),
    ):
        p = verb(pol, name, f"{name.split('-')[0]} a managed policy (name or ARN)")
        p.add_argument(kind)
        p.add_argument("policy")
    p = verb(pol, "create", "create a customer managed policy")
    p.add_argument("name")
    p.add_argument("--path", default="/")
    p.add_argument("--description", default="")
    with_document(p)
    p = verb(pol, "list", "list managed policies, or one user's/group's policies")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--user")
    who.add_argument("--group")

    mfa = area("mfa", "virtual MFA devices")
    p = verb(mfa, "create", "create a virtual MFA device (shows its seed once)")
    p.add_argument("name")
    p = verb(mfa, "enable", "enable a device for a user with two consecutive codes")
    p.add_argument("user")
    p.add_argument("serial", help="device ARN or name")
    p.add_argument("code1")
    p.add_argument("code2")
    p = verb(mfa, "list", "list MFA devices")
    p.add_argument("--user")

    groups.add_parser(
        "credentials", help="print the path of the administrator's credentials file",
        parents=[common],
    )  # fmt: skip
    return parser


# --------------------------------------------------------------------------- commands


async def account_id(store: Store) -> str:
    admin = await store.get_user(ADMIN_USER)
    if admin is None:
        page = await store.list_users(max_results=1)
        admin = page.items[0] if page.items else None
    if admin is None:
        raise AdminError(
            "this database has no administrator yet: start `portless server` once first"
        )
    return Arn.parse(admin.arn).account


async def _user(svc: IamService, args: argparse.Namespace) -> None:
    if args.verb == "create":
        user = await svc.create_user(args.name, path=args.path, tags=parse_tags(args.tag))
        print(f"created user {user.name} ({user.arn})")
    elif args.verb == "list":
        users = await svc.list_users()
        rows = []
        for u in users:
            keys = await svc.store.list_access_keys(u.name)
            groups = await svc.store.list_groups_for_user(u.name)
            rows.append(
                [
                    u.name,
                    u.user_id,
                    ",".join(g.name for g in groups),
                    str(sum(1 for k in keys if k.status == "Active")),
                    tags_text(u.tags),
                    when(u.created_date),
                ]
            )
        print(table(("NAME", "ID", "GROUPS", "KEYS", "TAGS", "CREATED"), rows))
    elif args.verb == "delete":
        if args.name == ADMIN_USER:
            raise AdminError("refusing to delete the administrator")
        if args.force:
            await svc.delete_user_force(args.name)
        else:
            await svc.delete_user(args.name)
        print(f"deleted user {args.name}")
    elif args.verb == "tag":
        tags = parse_tags(args.tags)
        if not tags and not args.remove:
            print(tags_text((await svc.get_user(args.name)).tags) or "(no tags)")
            return
        result = await svc.tag_user(args.name, tags) if tags else None
        if args.remove:
            result = await svc.untag_user(args.name, args.remove)
        print(f"{args.name}: {tags_text(result or {}) or '(no tags)'}")


async def _group(svc: IamService, args: argparse.Namespace) -> None:
    if args.verb == "create":
        group = await svc.create_group(args.name, path=args.path)
        print(f"created group {group.name} ({group.arn})")
    elif args.verb == "list":
        rows = []
        for g in await svc.store.list_groups():
            members = await svc.store.list_group_members(g.name)
            attached = await svc.store.list_attached_policies("group", g.name)
            inline = await svc.store.list_inline_policies("group", g.name)
            policies = [a.rsplit("/", 1)[-1] for a in attached] + [p.policy_name for p in inline]
            rows.append([g.name, ",".join(m.name for m in members), ",".join(policies)])
        print(table(("GROUP", "MEMBERS", "POLICIES"), rows))
    elif args.verb == "add-user":
        await svc.add_user_to_group(args.group, args.user)
        print(f"added {args.user} to {args.group}")
    elif args.verb == "remove-user":
        await svc.remove_user_from_group(args.group, args.user)
        print(f"removed {args.user} from {args.group}")


async def _key(svc: IamService, args: argparse.Namespace) -> None:
    if args.verb == "create":
        made = await svc.create_access_key(args.user)
        print(table(("USER", "ACCESS KEY ID", "SECRET ACCESS KEY"),
                    [[args.user, made.key.access_key_id, made.secret_access_key]]))  # fmt: skip
        print("\nThe secret is shown only now. As an AWS credentials profile:\n")
        print(f"[portless-{args.user}]")
        print(f"aws_access_key_id = {made.key.access_key_id}")
        print(f"aws_secret_access_key = {made.secret_access_key}")
        return
    if args.verb == "list":
        names = [args.user] if args.user else [u.name for u in await svc.list_users()]
        rows = []
        for name in names:
            for k in await svc.list_access_keys(name):
                rows.append([k.access_key_id, k.user_name, k.status, when(k.created_date)])
        print(table(("ACCESS KEY ID", "USER", "STATUS", "CREATED"), rows))
        return
    owner = await svc.owner_of_key(args.access_key_id)
    if owner is None:
        raise AdminError(f"no access key {args.access_key_id}")
    if args.verb == "delete":
        await svc.delete_access_key(owner, args.access_key_id)
        print(f"deleted {args.access_key_id} of {owner}")
    else:
        status: AccessKeyStatus = "Active" if args.verb == "activate" else "Inactive"
        await svc.update_access_key(owner, args.access_key_id, status)
        print(f"{args.access_key_id} of {owner} is now {status}")


async def _policy(svc: IamService, args: argparse.Namespace) -> None:
    verb = args.verb
    if verb in ("put-user", "put-group"):
        kind: PrincipalKind = "user" if verb == "put-user" else "group"
        principal = args.user if kind == "user" else args.group
        await svc.put_inline_policy(kind, principal, args.policy_name, read_document(args))
        print(f"put inline policy {args.policy_name} on {kind} {principal}")
    elif verb.startswith(("attach-", "detach-")):
        action, kind = verb.split("-")
        principal = getattr(args, kind)
        arn = await svc.resolve_policy_arn(args.policy)
        if kind == "role":
            if action == "attach":
                await svc.store.attach_policy("role", principal, (await svc.get_policy(arn)).arn)
            elif not await svc.store.detach_policy("role", principal, arn):
                raise AdminError(f"{arn} is not attached to role {principal}")
        elif action == "attach":
            await svc.attach_policy("user" if kind == "user" else "group", principal, arn)
        else:
            await svc.detach_policy("user" if kind == "user" else "group", principal, arn)
        print(f"{action}ed {arn} {'to' if action == 'attach' else 'from'} {kind} {principal}")
    elif verb == "create":
        info = await svc.create_policy(
            args.name, read_document(args), path=args.path, description=args.description
        )
        print(f"created policy {info.name} ({info.arn})")
    elif verb == "list":
        if args.user or args.group:
            which: PrincipalKind = "user" if args.user else "group"
            name = args.user or args.group
            rows = [
                ["inline", p.policy_name, ""] for p in await svc.list_inline_policies(which, name)
            ]
            rows += [["managed", n, a] for n, a in await svc.list_attached_policies(which, name)]
            if which == "user":
                for g in await svc.store.list_groups_for_user(name):
                    rows += [
                        [f"via group {g.name}", p.policy_name, ""]
                        for p in await svc.store.list_inline_policies("group", g.name)
                    ]
                    rows += [
                        [f"via group {g.name}", a.rsplit("/", 1)[-1], a]
                        for a in await svc.store.list_attached_policies("group", g.name)
                    ]
            print(table(("KIND", "NAME", "ARN"), rows))
            return
        rows = [
            [
                p.name,
                "AWS" if p.aws_managed else "customer",
                str(p.attachment_count),
                p.arn,
            ]
            for p in await svc.list_policies()
        ]
        print(table(("NAME", "OWNER", "ATTACHED", "ARN"), rows))


async def _mfa(svc: IamService, args: argparse.Namespace) -> None:
    if args.verb == "create":
        device, seed = await svc.create_virtual_mfa_device(args.name)
        print(f"serial  {device.serial_number}")
        print(f"seed    {seed}")
        print(f"uri     {totp.provisioning_uri(seed, args.name)}")
        print("\nAdd the seed to an authenticator app (it is shown only now), then run")
        print(f"  portless admin mfa enable USER {args.name} CODE1 CODE2")
    elif args.verb == "enable":
        serial = args.serial if args.serial.startswith("arn:") else svc.mfa_arn(args.serial)
        await svc.enable_mfa_device(args.user, serial, args.code1, args.code2)
        print(f"enabled {serial} for {args.user}")
    elif args.verb == "list":
        if args.user:
            devices = await svc.list_mfa_devices(args.user)
        else:
            devices = await svc.store.list_mfa_devices()
        rows = [
            [d.serial_number, d.user_name or "", when(d.enable_date), when(d.created_date)]
            for d in devices
        ]
        print(table(("SERIAL", "USER", "ENABLED", "CREATED"), rows))


_AREAS: dict[str, Callable[[IamService, argparse.Namespace], Awaitable[None]]] = {
    "user": _user,
    "group": _group,
    "key": _key,
    "policy": _policy,
    "mfa": _mfa,
}


async def run(args: argparse.Namespace, data_dir: Path, db_url: str | None) -> None:
    key_path = data_dir / KEY_FILE
    if not key_path.exists():
        raise AdminError(
            f"no server data in {data_dir} (no {KEY_FILE}): start `portless server` with this "
            "data directory first, or pass --data-dir"
        )
    url = ServerConfig(data_dir=data_dir, db_url=db_url).resolved_db_url()
    try:
        box = SecretBox.from_file(key_path)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    store = await Store.open(url, secret_box=box)
    try:
        svc = IamService(store, await account_id(store))
        await _AREAS[args.area](svc, args)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = Path(getattr(args, "data_dir", None) or default_data_dir()).expanduser()
    if args.area == "credentials":
        path = data_dir / CREDENTIALS_FILE
        if not path.exists():
            print(
                f"portless admin: no credentials at {path} (has the server run with this "
                "data directory?)",
                file=sys.stderr,
            )
            return 1
        print(path)
        return 0
    try:
        asyncio.run(run(args, data_dir, getattr(args, "db_url", None)))
    except AwsError as exc:
        print(f"portless admin: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (AdminError, StoreError) as exc:
        print(f"portless admin: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"portless admin: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    return 0
