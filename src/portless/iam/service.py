"""IAM's operations over the store, with IAM's rules, limits and error codes.

:class:`IamService` is shared by the query API (:mod:`portless.iam.query_api`) and the
operator's ``portless admin`` command, so both refuse the same things the same way. It
does no authorization: callers check the caller's permission first.

Errors are :class:`~portless.aws.errors.AwsError` with IAM's codes and HTTP statuses:
NoSuchEntity (404), EntityAlreadyExists (409), DeleteConflict (409), LimitExceeded (409),
InvalidInput (400), MalformedPolicyDocument (400), InvalidAuthenticationCode (403).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from portless.aws.arn import iam_user_arn
from portless.aws.errors import AwsError, validation_error
from portless.iam import totp
from portless.iam.managed import AWS_MANAGED_POLICY_ARN_PREFIX, get_managed_policy
from portless.iam.policy import (
    GROUP_INLINE_POLICY_MAX_CHARS,
    MANAGED_POLICY_MAX_CHARS,
    USER_INLINE_POLICY_MAX_CHARS,
    parse_policy,
    policy_size,
)
from portless.store import (
    AccessKey,
    AccessKeyStatus,
    AccessKeyWithSecret,
    AlreadyExistsError,
    InvalidOperationError,
    NotFoundError,
    Store,
    User,
)
from portless.store.iam import Group, InlinePolicy, MfaDevice, PrincipalKind

__all__ = [
    "ACCESS_KEYS_PER_USER",
    "GROUPS_PER_USER",
    "MAX_TAGS",
    "POLICIES_PER_PRINCIPAL",
    "POLICY_VERSIONS",
    "IamService",
    "PolicyInfo",
    "delete_conflict",
    "entity_already_exists",
    "invalid_input",
    "limit_exceeded",
    "no_such_entity",
]

ACCESS_KEYS_PER_USER = 2
GROUPS_PER_USER = 10
POLICIES_PER_PRINCIPAL = 10
POLICY_VERSIONS = 5
MAX_TAGS = 50
MFA_ENABLE_DRIFT = 2
"""EnableMFADevice accepts a consecutive pair whose second code is within this many steps."""

_AWS_POLICY_DATE = 1_546_300_800.0  # 2019-01-01T00:00:00Z: creation date shown for AWS policies


def no_such_entity(message: str) -> AwsError:
    return AwsError("NoSuchEntity", message, 404)


def entity_already_exists(message: str) -> AwsError:
    return AwsError("EntityAlreadyExists", message, 409)


def delete_conflict(message: str) -> AwsError:
    return AwsError("DeleteConflict", message, 409)


def limit_exceeded(message: str) -> AwsError:
    return AwsError("LimitExceeded", message, 409)


def invalid_input(message: str) -> AwsError:
    return AwsError("InvalidInput", message, 400)


def invalid_authentication_code() -> AwsError:
    return AwsError(
        "InvalidAuthenticationCode", "Authentication code for device is not valid.", 403
    )


_NAME = re.compile(r"[\w+=,.@-]+")
_PATH = re.compile(r"(/)|(/[\u0021-\u007E]+/)")


def check_name(value: str, member: str, max_length: int) -> None:
    """IAM's name rules (``[\\w+=,.@-]+``, length) as a ValidationError, as the API has them."""
    problem = None
    if not value:
        problem = "Member must have length greater than or equal to 1"
    elif len(value) > max_length:
        problem = f"Member must have length less than or equal to {max_length}"
    elif not _NAME.fullmatch(value):
        problem = "Member must satisfy regular expression pattern: [\\w+=,.@-]+"
    if problem is not None:
        message = validation_error([(value, member, problem)]).message
        raise AwsError("ValidationError", message, 400)


def check_path(value: str) -> None:
    if not _PATH.fullmatch(value) or len(value) > 512:
        message = validation_error(
            [(value, "path", "Member must satisfy regular expression pattern: (/)|(/[!-~]+/)")]
        ).message
        raise AwsError("ValidationError", message, 400)


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """A managed policy as GetPolicy shows it (customer managed or AWS managed)."""

    name: str
    policy_id: str
    arn: str
    path: str
    default_version_id: str
    attachment_count: int
    description: str
    create_date: float
    update_date: float
    document: str
    aws_managed: bool
    tags: dict[str, str]


def _aws_policy_id(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "ANPA" + "".join(alphabet[b % 32] for b in digest[:17])


def path_of(arn: str, kind: str, name: str) -> str:
    """The IAM path inside an ARN (``/`` or ``/eng/``) for ``kind/PATH/NAME``."""
    resource = arn.split(":", 5)[-1]
    inner = resource[len(kind) : len(resource) - len(name)]
    return inner if inner.startswith("/") and inner.endswith("/") else "/"


class IamService:
    """IAM operations for one account over a :class:`Store`."""

    def __init__(self, store: Store, account_id: str, *, clock: object = None) -> None:
        self.store = store
        self.account_id = account_id
        self._clock = clock if callable(clock) else time.time

    def now(self) -> float:
        value = self._clock()
        return float(value) if isinstance(value, int | float) else time.time()

    # ------------------------------------------------------------------ ARNs

    def user_arn(self, name: str, path: str = "/") -> str:
        return str(iam_user_arn(self.account_id, name, path=path))

    def group_arn(self, name: str, path: str = "/") -> str:
        return f"arn:aws:iam::{self.account_id}:group{path}{name}"

    def policy_arn(self, name: str, path: str = "/") -> str:
        return f"arn:aws:iam::{self.account_id}:policy{path}{name}"

    def mfa_arn(self, name: str, path: str = "/") -> str:
        return f"arn:aws:iam::{self.account_id}:mfa{path}{name}"

    # ------------------------------------------------------------------ users

    async def get_user(self, name: str) -> User:
        user = await self.store.get_user(name)
        if user is None:
            raise no_such_entity(f"The user with name {name} cannot be found.")
        return user

    async def create_user(
        self, name: str, *, path: str = "/", tags: Mapping[str, str] | None = None
    ) -> User:
        check_name(name, "userName", 64)
        check_path(path)
        if tags and len(tags) > MAX_TAGS:
            raise limit_exceeded(f"Cannot exceed quota for TagsPerUser: {MAX_TAGS}")
        try:
            return await self.store.create_user(name, arn=self.user_arn(name, path), tags=tags)
        except AlreadyExistsError:
            raise entity_already_exists(f"User with name {name} already exists.") from None

    async def list_users(self, path_prefix: str = "/") -> list[User]:
        users: list[User] = []
        token: str | None = None
        while True:
            page = await self.store.list_users(max_results=1000, next_token=token)
            users.extend(page.items)
            token = page.next_token
            if token is None:
                break
        return [u for u in users if path_of(u.arn, "user", u.name).startswith(path_prefix)]

    async def delete_user(self, name: str) -> None:
        """Delete a user that owns nothing any more (IAM's DeleteConflict rules)."""
        await self.get_user(name)
        if await self.store.list_access_keys(name):
            raise delete_conflict("Cannot delete entity, must delete access keys first.")
        if await self.store.list_inline_policies("user", name):
            raise delete_conflict("Cannot delete entity, must delete policies first.")
        if await self.store.list_attached_policies("user", name):
            raise delete_conflict("Cannot delete entity, must detach all policies first.")
        if await self.store.list_groups_for_user(name):
            raise delete_conflict("Cannot delete entity, must remove user from all groups first.")
        if await self.store.list_mfa_devices(user_name=name):
            raise delete_conflict("Cannot delete entity, must delete MFA device first.")
        await self.store.delete_user(name)
        await self.store.delete_credentials_for("user", name)

    async def delete_user_force(self, name: str) -> None:
        """Remove everything the user owns, then the user (for ``portless admin``)."""
        await self.get_user(name)
        for device in await self.store.list_mfa_devices(user_name=name):
            await self.store.deactivate_mfa_device(device.serial_number, name)
        await self.store.delete_user(name)  # keys, memberships, policies cascade
        await self.store.delete_credentials_for("user", name)

    async def tag_user(self, name: str, tags: Mapping[str, str]) -> dict[str, str]:
        try:
            return await self.store.update_user_tags(name, set_tags=tags, max_tags=MAX_TAGS)
        except NotFoundError:
            raise no_such_entity(f"The user with name {name} cannot be found.") from None
        except InvalidOperationError:
            raise limit_exceeded(f"Cannot exceed quota for TagsPerUser: {MAX_TAGS}") from None

    async def untag_user(self, name: str, keys: Sequence[str]) -> dict[str, str]:
        try:
            return await self.store.update_user_tags(name, remove_keys=keys)
        except NotFoundError:
            raise no_such_entity(f"The user with name {name} cannot be found.") from None

    # ------------------------------------------------------------------ groups

    async def get_group(self, name: str) -> Group:
        group = await self.store.get_group(name)
        if group is None:
            raise no_such_entity(f"The group with name {name} cannot be found.")
        return group

    async def create_group(self, name: str, *, path: str = "/") -> Group:
        check_name(name, "groupName", 128)
        check_path(path)
        try:
            return await self.store.create_group(name, arn=self.group_arn(name, path), path=path)
        except AlreadyExistsError:
            raise entity_already_exists(f"Group with name {name} already exists.") from None

    async def add_user_to_group(self, group: str, user: str) -> None:
        await self.get_group(group)
        await self.get_user(user)
        current = await self.store.list_groups_for_user(user)
        if any(g.name == group for g in current):
            return
        if len(current) >= GROUPS_PER_USER:
            raise limit_exceeded(f"Cannot exceed quota for GroupsPerUser: {GROUPS_PER_USER}")
        try:
            await self.store.add_user_to_group(group, user)
        except NotFoundError:
            raise no_such_entity(f"The group with name {group} cannot be found.") from None

    async def remove_user_from_group(self, group: str, user: str) -> None:
        await self.get_group(group)
        await self.get_user(user)
        if not await self.store.remove_user_from_group(group, user):
            raise no_such_entity(f"User {user} is not in group {group}.")

    async def list_groups_for_user(self, user: str) -> list[Group]:
        await self.get_user(user)
        return await self.store.list_groups_for_user(user)

    # ------------------------------------------------------------------ access keys

    async def create_access_key(self, user: str) -> AccessKeyWithSecret:
        await self.get_user(user)
        if len(await self.store.list_access_keys(user)) >= ACCESS_KEYS_PER_USER:
            raise limit_exceeded(
                f"Cannot exceed quota for AccessKeysPerUser: {ACCESS_KEYS_PER_USER}"
            )
        try:
            return await self.store.create_access_key(user)
        except NotFoundError:
            raise no_such_entity(f"The user with name {user} cannot be found.") from None

    async def list_access_keys(self, user: str) -> list[AccessKey]:
        await self.get_user(user)
        return await self.store.list_access_keys(user)

    async def _own_key(self, user: str, access_key_id: str) -> AccessKey:
        await self.get_user(user)
        for key in await self.store.list_access_keys(user):
            if key.access_key_id == access_key_id:
                return key
        raise no_such_entity(f"The Access Key with id {access_key_id} cannot be found.")

    async def update_access_key(
        self, user: str, access_key_id: str, status: AccessKeyStatus
    ) -> None:
        await self._own_key(user, access_key_id)
        await self.store.set_access_key_status(access_key_id, status)

    async def delete_access_key(self, user: str, access_key_id: str) -> None:
        await self._own_key(user, access_key_id)
        await self.store.delete_access_key(access_key_id)

    async def owner_of_key(self, access_key_id: str) -> str | None:
        found = await self.store.get_access_key(access_key_id)
        return found.key.user_name if found is not None else None

    # ------------------------------------------------------------------ inline policies

    async def _principal(self, kind: PrincipalKind, name: str) -> None:
        if kind == "user":
            await self.get_user(name)
        elif kind == "group":
            await self.get_group(name)

    async def put_inline_policy(
        self, kind: PrincipalKind, principal: str, policy_name: str, document: str
    ) -> None:
        check_name(policy_name, "policyName", 128)
        await self._principal(kind, principal)
        parse_policy(document, max_chars=None)
        limit = USER_INLINE_POLICY_MAX_CHARS if kind == "user" else GROUP_INLINE_POLICY_MAX_CHARS
        others = sum(
            policy_size(p.document)
            for p in await self.store.list_inline_policies(kind, principal)
            if p.policy_name != policy_name
        )
        if kind != "role" and others + policy_size(document) > limit:
            raise limit_exceeded(
                f"Maximum policy size of {limit} bytes exceeded for {kind} {principal}"
            )
        await self.store.put_inline_policy(kind, principal, policy_name, document)

    async def get_inline_policy(
        self, kind: PrincipalKind, principal: str, policy_name: str
    ) -> InlinePolicy:
        await self._principal(kind, principal)
        found = await self.store.get_inline_policy(kind, principal, policy_name)
        if found is None:
            raise no_such_entity(f"The {kind} policy with name {policy_name} cannot be found.")
        return found

    async def delete_inline_policy(
        self, kind: PrincipalKind, principal: str, policy_name: str
    ) -> None:
        await self._principal(kind, principal)
        if not await self.store.delete_inline_policy(kind, principal, policy_name):
            raise no_such_entity(f"The {kind} policy with name {policy_name} cannot be found.")

    async def list_inline_policies(self, kind: PrincipalKind, principal: str) -> list[InlinePolicy]:
        await self._principal(kind, principal)
        return await self.store.list_inline_policies(kind, principal)

    # ------------------------------------------------------------------ managed policies

    async def create_policy(
        self,
        name: str,
        document: str,
        *,
        path: str = "/",
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> PolicyInfo:
        check_name(name, "policyName", 128)
        check_path(path)
        parse_policy(document, max_chars=MANAGED_POLICY_MAX_CHARS)
        if tags and len(tags) > MAX_TAGS:
            raise limit_exceeded(f"Cannot exceed quota for TagsPerPolicy: {MAX_TAGS}")
        try:
            await self.store.create_policy(
                name,
                arn=self.policy_arn(name, path),
                document=document,
                path=path,
                description=description,
                tags=tags,
            )
        except AlreadyExistsError:
            raise entity_already_exists(
                f"A policy called {name} already exists. Duplicate names are not allowed."
            ) from None
        return await self.get_policy(self.policy_arn(name, path))

    async def get_policy(self, arn: str) -> PolicyInfo:
        if arn.startswith(AWS_MANAGED_POLICY_ARN_PREFIX):
            managed = get_managed_policy(arn)
            if managed is None:
                raise no_such_entity(f"Policy {arn} does not exist or is not attachable.")
            return PolicyInfo(
                name=managed.name,
                policy_id=_aws_policy_id(managed.name),
                arn=managed.arn,
                path=managed.path,
                default_version_id=managed.version_id,
                attachment_count=await self.store.count_policy_attachments(managed.arn),
                description=managed.description,
                create_date=_AWS_POLICY_DATE,
                update_date=_AWS_POLICY_DATE,
                document=managed.text,
                aws_managed=True,
                tags={},
            )
        found = await self.store.get_policy(arn)
        if found is None:
            raise no_such_entity(f"Policy {arn} does not exist or is not attachable.")
        return PolicyInfo(
            name=found.name,
            policy_id=found.policy_id,
            arn=found.arn,
            path=found.path,
            default_version_id=found.default_version_id,
            attachment_count=found.attachment_count,
            description=found.description,
            create_date=found.created_date,
            update_date=found.updated_date,
            document=found.document,
            aws_managed=False,
            tags=found.tags,
        )

    async def get_policy_version(self, arn: str, version_id: str) -> tuple[str, bool, float]:
        """(document, is default, create date) of one version."""
        info = await self.get_policy(arn)
        if info.aws_managed:
            if version_id != info.default_version_id:
                raise no_such_entity(f"Policy {arn} version {version_id} does not exist.")
            return info.document, True, info.create_date
        found = await self.store.get_policy_version(arn, version_id)
        if found is None:
            raise no_such_entity(f"Policy {arn} version {version_id} does not exist.")
        return found.document, found.is_default, found.created_date

    async def list_policies(self) -> list[PolicyInfo]:
        from portless.iam.managed import AWS_MANAGED_POLICIES

        out = [await self.get_policy(p.arn) for p in AWS_MANAGED_POLICIES.values()]
        out.extend([await self.get_policy(p.arn) for p in await self.store.list_policies()])
        return out

    async def delete_policy(self, arn: str) -> None:
        info = await self.get_policy(arn)
        if info.aws_managed:
            raise invalid_input(f"Cannot delete the AWS managed policy {arn}.")
        if info.attachment_count:
            raise delete_conflict("Cannot delete a policy attached to entities.")
        await self.store.delete_policy(arn)

    async def resolve_policy_arn(self, name_or_arn: str) -> str:
        """An ARN from an ARN or a bare name (customer policies first, then AWS managed)."""
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        for candidate in (
            self.policy_arn(name_or_arn),
            AWS_MANAGED_POLICY_ARN_PREFIX + name_or_arn,
        ):
            try:
                return (await self.get_policy(candidate)).arn
            except AwsError:
                continue
        raise no_such_entity(f"Policy {name_or_arn} does not exist or is not attachable.")

    async def attach_policy(self, kind: PrincipalKind, principal: str, arn: str) -> None:
        await self._principal(kind, principal)
        await self.get_policy(arn)
        try:
            await self.store.attach_policy(
                kind, principal, arn, max_attached=POLICIES_PER_PRINCIPAL
            )
        except InvalidOperationError:
            noun = {
                "user": "PoliciesPerUser",
                "group": "PoliciesPerGroup",
                "role": "PoliciesPerRole",
            }
            raise limit_exceeded(
                f"Cannot exceed quota for {noun[kind]}: {POLICIES_PER_PRINCIPAL}"
            ) from None
        except NotFoundError:
            raise no_such_entity(f"Policy {arn} does not exist or is not attachable.") from None

    async def detach_policy(self, kind: PrincipalKind, principal: str, arn: str) -> None:
        await self._principal(kind, principal)
        if not await self.store.detach_policy(kind, principal, arn):
            raise no_such_entity(f"Policy {arn} was not found.")

    async def list_attached_policies(
        self, kind: PrincipalKind, principal: str
    ) -> list[tuple[str, str]]:
        """(policy name, ARN) pairs."""
        await self._principal(kind, principal)
        arns = await self.store.list_attached_policies(kind, principal)
        return [(arn.rsplit("/", 1)[-1], arn) for arn in arns]

    # ------------------------------------------------------------------ MFA

    async def create_virtual_mfa_device(
        self, name: str, *, path: str = "/", tags: Mapping[str, str] | None = None
    ) -> tuple[MfaDevice, str]:
        """A new device and its base32 seed (shown once)."""
        check_name(name, "virtualMFADeviceName", 226)
        check_path(path)
        seed = totp.generate_secret()
        try:
            device = await self.store.create_mfa_device(
                self.mfa_arn(name, path), name=name, secret=seed, path=path, tags=tags
            )
        except AlreadyExistsError:
            raise entity_already_exists(
                "MFADevice entity at the same path and name already exists."
            ) from None
        return device, seed

    async def get_mfa_device(self, serial: str) -> MfaDevice:
        device = await self.store.get_mfa_device(serial)
        if device is None:
            raise no_such_entity(f"VirtualMFADevice with serial number {serial} doesn't exist.")
        return device

    async def enable_mfa_device(self, user: str, serial: str, code1: str, code2: str) -> None:
        """Enable a device for a user with two consecutive codes, as IAM does."""
        await self.get_user(user)
        device = await self.get_mfa_device(serial)
        if device.user_name is not None:
            raise entity_already_exists("MFA Device is already in use.")
        seed = await self.store.get_mfa_secret(serial)
        if seed is None:  # pragma: no cover - deleted in between
            raise no_such_entity(f"VirtualMFADevice with serial number {serial} doesn't exist.")
        key = totp.decode_secret(seed)
        current = totp.time_step(self.now())
        second: int | None = None
        for step in range(current - MFA_ENABLE_DRIFT, current + 2):
            if step < 1:
                continue
            if totp.hotp(key, step - 1) == code1 and totp.hotp(key, step) == code2:
                second = step
                break
        if second is None:
            raise invalid_authentication_code()
        try:
            await self.store.enable_mfa_device(serial, user, last_used_step=second)
        except AlreadyExistsError:
            raise entity_already_exists("MFA Device is already in use.") from None
        except NotFoundError:
            raise no_such_entity(
                f"VirtualMFADevice with serial number {serial} doesn't exist."
            ) from None

    async def deactivate_mfa_device(self, user: str, serial: str) -> None:
        await self.get_user(user)
        if not await self.store.deactivate_mfa_device(serial, user):
            raise no_such_entity(f"MFA Device with serial number {serial} does not exist.")

    async def delete_virtual_mfa_device(self, serial: str) -> None:
        device = await self.get_mfa_device(serial)
        if device.user_name is not None:
            raise delete_conflict("MFA device is still in use.")
        await self.store.delete_mfa_device(serial)

    async def list_mfa_devices(self, user: str) -> list[MfaDevice]:
        await self.get_user(user)
        return await self.store.list_mfa_devices(user_name=user)

    async def check_mfa_code(self, user: str, serial: str, code: str) -> float | None:
        """Accept *code* from the user's enabled device *serial* once; return the time of
        authentication, or None if the device is not theirs, the code is wrong, or it (or a
        later one) was used already."""
        device = await self.store.get_mfa_device(serial)
        if device is None or device.user_name != user:
            return None
        seed = await self.store.get_mfa_secret(serial)
        if seed is None:
            return None
        moment = self.now()
        step = totp.match_step(
            totp.decode_secret(seed), code, moment, window=1, after=device.last_used_step
        )
        if step is None or not await self.store.consume_mfa_step(serial, step):
            return None
        return moment
