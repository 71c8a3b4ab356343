"""The IAM endpoint: AWS's query protocol (``Action=…&Version=2010-05-08``, XML answers).

:func:`handle_iam` serves one request whose caller is already authenticated (SigV4 with the
credential scope's service ``iam``). Every operation is authorized through the *authorize*
callback before it acts (``iam:CreateUser`` on ``arn:aws:iam::ACCOUNT:user/NAME``, …) and
answers in the XML botocore parses, so ``aws iam … --endpoint-url`` and boto3 work.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from portless.aws.errors import AwsError
from portless.iam.authorizer import AuthorizeFn, access_denied_error
from portless.iam.context import ContextValue
from portless.iam.principal import Principal, account_of
from portless.iam.query import serve_query, validation_failure
from portless.iam.service import IamService, PolicyInfo, path_of
from portless.store import AccessKey, Store, User
from portless.store.iam import Group

__all__ = ["IAM_OPERATIONS", "handle_iam"]

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 100


@dataclass(eq=False)
class _Call:
    service: IamService
    caller: Principal
    args: dict[str, Any]
    authorize: AuthorizeFn

    async def check(
        self, action: str, resource: str, keys: Mapping[str, ContextValue] | None = None
    ) -> None:
        decision = await self.authorize(action, resource, condition_keys=keys)
        if not decision.allowed:
            raise access_denied_error(
                decision, self.caller.arn, action, resource, code="AccessDenied", status=403
            )

    def text(self, name: str, default: str = "") -> str:
        value = self.args.get(name)
        return value if isinstance(value, str) else default

    def user_name(self) -> str:
        """``UserName``, or the calling user when omitted (GetUser, CreateAccessKey …)."""
        name = self.text("UserName")
        if name:
            return name
        if self.caller.kind != "user":
            raise validation_failure(
                [(None, "userName", "Must specify userName when calling with non-User credentials")]
            )
        return self.caller.name

    async def user_arn(self, name: str) -> str:
        user = await self.service.store.get_user(name)
        return user.arn if user is not None else self.service.user_arn(name)

    async def group_arn(self, name: str) -> str:
        group = await self.service.store.get_group(name)
        return group.arn if group is not None else self.service.group_arn(name)


Handler = Callable[[_Call], Awaitable[dict[str, Any] | None]]
IAM_OPERATIONS: dict[str, Handler] = {}


def _op(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        IAM_OPERATIONS[name] = fn
        return fn

    return register


# --------------------------------------------------------------------------- shapes


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _tag_args(raw: Any) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in raw or [] if isinstance(t, dict) and "Key" in t}


def _user(user: User, *, with_tags: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Path": path_of(user.arn, "user", user.name),
        "UserName": user.name,
        "UserId": user.user_id,
        "Arn": user.arn,
        "CreateDate": user.created_date,
    }
    if with_tags and user.tags:
        out["Tags"] = _tags(user.tags)
    return out


def _group(group: Group) -> dict[str, Any]:
    return {
        "Path": group.path,
        "GroupName": group.name,
        "GroupId": group.group_id,
        "Arn": group.arn,
        "CreateDate": group.created_date,
    }


def _key(key: AccessKey) -> dict[str, Any]:
    return {
        "UserName": key.user_name,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "CreateDate": key.created_date,
    }


def _policy(info: PolicyInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "PolicyName": info.name,
        "PolicyId": info.policy_id,
        "Arn": info.arn,
        "Path": info.path,
        "DefaultVersionId": info.default_version_id,
        "AttachmentCount": info.attachment_count,
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": True,
        "CreateDate": info.create_date,
        "UpdateDate": info.update_date,
    }
    if info.description:
        out["Description"] = info.description
    if info.tags:
        out["Tags"] = _tags(info.tags)
    return out


def _quoted(document: str) -> str:
    """Policy documents travel URL-encoded in IAM's responses (botocore decodes them)."""
    return urllib.parse.quote(document, safe="")


def _page(call: _Call, items: list[Any], member: str) -> dict[str, Any]:
    """IAM's Marker/MaxItems pagination over a fully read list."""
    start = 0
    marker = call.text("Marker")
    if marker:
        try:
            start = int(marker)
        except ValueError:
            raise AwsError("InvalidInput", "Invalid Marker.", 400) from None
        if start < 0 or start > len(items):
            raise AwsError("InvalidInput", "Invalid Marker.", 400)
    limit = call.args.get("MaxItems") or DEFAULT_MAX_ITEMS
    chunk = items[start : start + int(limit)]
    end = start + len(chunk)
    out: dict[str, Any] = {member: chunk, "IsTruncated": end < len(items)}
    if end < len(items):
        out["Marker"] = str(end)
    return out


# --------------------------------------------------------------------------- users


@_op("CreateUser")
async def _create_user(call: _Call) -> dict[str, Any]:
    name, path = call.text("UserName"), call.text("Path", "/")
    tags = _tag_args(call.args.get("Tags"))
    await call.check("iam:CreateUser", call.service.user_arn(name, path))
    user = await call.service.create_user(name, path=path, tags=tags)
    return {"User": _user(user)}


@_op("GetUser")
async def _get_user(call: _Call) -> dict[str, Any]:
    name = call.user_name()
    await call.check("iam:GetUser", await call.user_arn(name))
    return {"User": _user(await call.service.get_user(name))}


@_op("ListUsers")
async def _list_users(call: _Call) -> dict[str, Any]:
    prefix = call.text("PathPrefix", "/")
    await call.check("iam:ListUsers", f"arn:aws:iam::{call.service.account_id}:user{prefix}")
    users = await call.service.list_users(prefix)
    return _page(call, [_user(u, with_tags=False) for u in users], "Users")


@_op("DeleteUser")
async def _delete_user(call: _Call) -> None:
    name = call.text("UserName")
    await call.check("iam:DeleteUser", await call.user_arn(name))
    await call.service.delete_user(name)


@_op("TagUser")
async def _tag_user(call: _Call) -> None:
    name = call.text("UserName")
    tags = _tag_args(call.args.get("Tags"))
    await call.check("iam:TagUser", await call.user_arn(name), {"aws:TagKeys": sorted(tags)})
    await call.service.tag_user(name, tags)


@_op("UntagUser")
async def _untag_user(call: _Call) -> None:
    name = call.text("UserName")
    keys = [k for k in call.args.get("TagKeys") or [] if isinstance(k, str)]
    await call.check("iam:UntagUser", await call.user_arn(name), {"aws:TagKeys": sorted(keys)})
    await call.service.untag_user(name, keys)


@_op("ListUserTags")
async def _list_user_tags(call: _Call) -> dict[str, Any]:
    name = call.text("UserName")
    await call.check("iam:ListUserTags", await call.user_arn(name))
    user = await call.service.get_user(name)
    return _page(call, _tags(user.tags), "Tags")


# --------------------------------------------------------------------------- groups


@_op("CreateGroup")
async def _create_group(call: _Call) -> dict[str, Any]:
    name, path = call.text("GroupName"), call.text("Path", "/")
    await call.check("iam:CreateGroup", call.service.group_arn(name, path))
    return {"Group": _group(await call.service.create_group(name, path=path))}


@_op("AddUserToGroup")
async def _add_user_to_group(call: _Call) -> None:
    group, user = call.text("GroupName"), call.text("UserName")
    await call.check("iam:AddUserToGroup", await call.group_arn(group))
    await call.service.add_user_to_group(group, user)


@_op("RemoveUserFromGroup")
async def _remove_user_from_group(call: _Call) -> None:
    group, user = call.text("GroupName"), call.text("UserName")
    await call.check("iam:RemoveUserFromGroup", await call.group_arn(group))
    await call.service.remove_user_from_group(group, user)


@_op("ListGroupsForUser")
async def _list_groups_for_user(call: _Call) -> dict[str, Any]:
    name = call.text("UserName")
    await call.check("iam:ListGroupsForUser", await call.user_arn(name))
    groups = await call.service.list_groups_for_user(name)
    return _page(call, [_group(g) for g in groups], "Groups")


# --------------------------------------------------------------------------- access keys


@_op("CreateAccessKey")
async def _create_access_key(call: _Call) -> dict[str, Any]:
    name = call.user_name()
    await call.check("iam:CreateAccessKey", await call.user_arn(name))
    made = await call.service.create_access_key(name)
    out = _key(made.key)
    out["SecretAccessKey"] = made.secret_access_key
    return {"AccessKey": out}


@_op("ListAccessKeys")
async def _list_access_keys(call: _Call) -> dict[str, Any]:
    name = call.user_name()
    await call.check("iam:ListAccessKeys", await call.user_arn(name))
    keys = await call.service.list_access_keys(name)
    return _page(call, [_key(k) for k in keys], "AccessKeyMetadata")


async def _key_owner(call: _Call) -> str:
    if call.text("UserName"):
        return call.text("UserName")
    # IAM: without UserName the key is looked up among the caller's own keys.
    return call.user_name()


@_op("UpdateAccessKey")
async def _update_access_key(call: _Call) -> None:
    name = await _key_owner(call)
    akid, status = call.text("AccessKeyId"), call.text("Status")
    if status not in ("Active", "Inactive"):
        raise validation_failure(
            [(status, "status", "Member must satisfy enum value set: [Active, Inactive]")]
        )
    await call.check("iam:UpdateAccessKey", await call.user_arn(name))
    await call.service.update_access_key(name, akid, "Active" if status == "Active" else "Inactive")


@_op("DeleteAccessKey")
async def _delete_access_key(call: _Call) -> None:
    name = await _key_owner(call)
    akid = call.text("AccessKeyId")
    await call.check("iam:DeleteAccessKey", await call.user_arn(name))
    await call.service.delete_access_key(name, akid)


# --------------------------------------------------------------------------- inline policies


@_op("PutUserPolicy")
async def _put_user_policy(call: _Call) -> None:
    name = call.text("UserName")
    await call.check("iam:PutUserPolicy", await call.user_arn(name))
    await call.service.put_inline_policy(
        "user", name, call.text("PolicyName"), call.text("PolicyDocument")
    )


@_op("GetUserPolicy")
async def _get_user_policy(call: _Call) -> dict[str, Any]:
    name = call.text("UserName")
    await call.check("iam:GetUserPolicy", await call.user_arn(name))
    found = await call.service.get_inline_policy("user", name, call.text("PolicyName"))
    return {
        "UserName": name,
        "PolicyName": found.policy_name,
        "PolicyDocument": _quoted(found.document),
    }


@_op("DeleteUserPolicy")
async def _delete_user_policy(call: _Call) -> None:
    name = call.text("UserName")
    await call.check("iam:DeleteUserPolicy", await call.user_arn(name))
    await call.service.delete_inline_policy("user", name, call.text("PolicyName"))


@_op("PutGroupPolicy")
async def _put_group_policy(call: _Call) -> None:
    name = call.text("GroupName")
    await call.check("iam:PutGroupPolicy", await call.group_arn(name))
    await call.service.put_inline_policy(
        "group", name, call.text("PolicyName"), call.text("PolicyDocument")
    )


# --------------------------------------------------------------------------- managed policies


@_op("CreatePolicy")
async def _create_policy(call: _Call) -> dict[str, Any]:
    name, path = call.text("PolicyName"), call.text("Path", "/")
    await call.check("iam:CreatePolicy", call.service.policy_arn(name, path))
    info = await call.service.create_policy(
        name,
        call.text("PolicyDocument"),
        path=path,
        description=call.text("Description"),
        tags=_tag_args(call.args.get("Tags")),
    )
    return {"Policy": _policy(info)}


@_op("GetPolicy")
async def _get_policy(call: _Call) -> dict[str, Any]:
    arn = call.text("PolicyArn")
    await call.check("iam:GetPolicy", arn)
    return {"Policy": _policy(await call.service.get_policy(arn))}


@_op("GetPolicyVersion")
async def _get_policy_version(call: _Call) -> dict[str, Any]:
    arn, version = call.text("PolicyArn"), call.text("VersionId")
    await call.check("iam:GetPolicyVersion", arn)
    document, is_default, created = await call.service.get_policy_version(arn, version)
    return {
        "PolicyVersion": {
            "Document": _quoted(document),
            "VersionId": version,
            "IsDefaultVersion": is_default,
            "CreateDate": created,
        }
    }


@_op("DeletePolicy")
async def _delete_policy(call: _Call) -> None:
    arn = call.text("PolicyArn")
    await call.check("iam:DeletePolicy", arn)
    await call.service.delete_policy(arn)


@_op("AttachUserPolicy")
async def _attach_user_policy(call: _Call) -> None:
    name, arn = call.text("UserName"), call.text("PolicyArn")
    await call.check("iam:AttachUserPolicy", await call.user_arn(name), {"iam:PolicyARN": arn})
    await call.service.attach_policy("user", name, arn)


@_op("DetachUserPolicy")
async def _detach_user_policy(call: _Call) -> None:
    name, arn = call.text("UserName"), call.text("PolicyArn")
    await call.check("iam:DetachUserPolicy", await call.user_arn(name), {"iam:PolicyARN": arn})
    await call.service.detach_policy("user", name, arn)


@_op("AttachGroupPolicy")
async def _attach_group_policy(call: _Call) -> None:
    name, arn = call.text("GroupName"), call.text("PolicyArn")
    await call.check("iam:AttachGroupPolicy", await call.group_arn(name), {"iam:PolicyARN": arn})
    await call.service.attach_policy("group", name, arn)


@_op("DetachGroupPolicy")
async def _detach_group_policy(call: _Call) -> None:
    name, arn = call.text("GroupName"), call.text("PolicyArn")
    await call.check("iam:DetachGroupPolicy", await call.group_arn(name), {"iam:PolicyARN": arn})
    await call.service.detach_policy("group", name, arn)


@_op("ListAttachedUserPolicies")
async def _list_attached_user_policies(call: _Call) -> dict[str, Any]:
    name = call.text("UserName")
    prefix = call.text("PathPrefix", "/")
    await call.check("iam:ListAttachedUserPolicies", await call.user_arn(name))
    pairs = await call.service.list_attached_policies("user", name)
    items = [
        {"PolicyName": n, "PolicyArn": a}
        for n, a in pairs
        if path_of(a, "policy", n).startswith(prefix)
    ]
    return _page(call, items, "AttachedPolicies")


# --------------------------------------------------------------------------- MFA


@_op("CreateVirtualMFADevice")
async def _create_virtual_mfa_device(call: _Call) -> dict[str, Any]:
    name, path = call.text("VirtualMFADeviceName"), call.text("Path", "/")
    await call.check("iam:CreateVirtualMFADevice", call.service.mfa_arn(name, path))
    device, seed = await call.service.create_virtual_mfa_device(
        name, path=path, tags=_tag_args(call.args.get("Tags"))
    )
    out: dict[str, Any] = {"SerialNumber": device.serial_number, "Base32StringSeed": seed}
    if device.tags:
        out["Tags"] = _tags(device.tags)
    return {"VirtualMFADevice": out}


@_op("EnableMFADevice")
async def _enable_mfa_device(call: _Call) -> None:
    name = call.text("UserName")
    await call.check("iam:EnableMFADevice", await call.user_arn(name))
    await call.service.enable_mfa_device(
        name,
        call.text("SerialNumber"),
        call.text("AuthenticationCode1"),
        call.text("AuthenticationCode2"),
    )


@_op("DeactivateMFADevice")
async def _deactivate_mfa_device(call: _Call) -> None:
    name = call.user_name()
    await call.check("iam:DeactivateMFADevice", await call.user_arn(name))
    await call.service.deactivate_mfa_device(name, call.text("SerialNumber"))


@_op("DeleteVirtualMFADevice")
async def _delete_virtual_mfa_device(call: _Call) -> None:
    serial = call.text("SerialNumber")
    await call.check("iam:DeleteVirtualMFADevice", serial)
    await call.service.delete_virtual_mfa_device(serial)


@_op("ListMFADevices")
async def _list_mfa_devices(call: _Call) -> dict[str, Any]:
    name = call.user_name()
    await call.check("iam:ListMFADevices", await call.user_arn(name))
    devices = await call.service.list_mfa_devices(name)
    items = [
        {"UserName": name, "SerialNumber": d.serial_number, "EnableDate": d.enable_date or 0.0}
        for d in devices
    ]
    return _page(call, items, "MFADevices")


# --------------------------------------------------------------------------- entry point


async def handle_iam(
    store: Store,
    caller: Principal,
    params: Mapping[str, str],
    request_id: str,
    *,
    authorize: AuthorizeFn,
    account_id: str | None = None,
) -> tuple[int, bytes]:
    """Serve one IAM query-protocol request: ``(HTTP status, XML body)``.

    *params* is the decoded form body (``Action``, ``Version`` and the operation's
    parameters). *authorize* is the caller's bound authorizer
    (:meth:`portless.iam.authorizer.Authorizer.bind`). *account_id* defaults to the
    caller's ARN's account. The response content type is ``text/xml``.
    """


    async def run(action: str, args: dict[str, Any]) -> dict[str, Any] | None:
        service = IamService(store, account_id or account_of(caller.arn))
        return await IAM_OPERATIONS[action](_Call(service, caller, args, authorize))

    return await serve_query("iam", params, request_id, IAM_OPERATIONS, run, log)
