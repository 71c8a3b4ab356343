"""Nodes: activations, registration, credentials, health, DescribeInstanceInformation, tags.

Agent-facing parts follow ssm-agent-protocol.md §3-§6; the shapes returned to
people follow the SSM model (client spec §1.3).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from typing import Any

from portless.aws.arn import document_arn, managed_instance_arn
from portless.aws.awsjson import (
    optional_int,
    optional_object,
    optional_str,
    require_enum,
    require_str,
)
from portless.aws.errors import AwsError, validation_error
from portless.aws.rsa_signature import load_public_key_b64
from portless.server.api import operation
from portless.server.context import Call, ServerContext
from portless.store import InvalidNextTokenError, ManagedInstance, NotFoundError
from portless.store.records import RegistrationOutcome

INSTANCE_ID_RE = re.compile(r"^(mi-[0-9a-f]{17}|i-(\w{8}|\w{17}))$")
ACTIVATION_ID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
DEFAULT_ACTIVATION_TTL = 24 * 3600.0
MAX_ACTIVATION_TTL = 30 * 24 * 3600.0
MAX_TAGS_PER_RESOURCE = 50
_CODE_ALPHABET = string.ascii_letters + string.digits

PLATFORM_NAMES = {"linux": "Linux", "windows": "Windows", "macos": "MacOS", "darwin": "MacOS"}


def instance_arn(ctx: ServerContext, instance_id: str) -> str:
    return str(managed_instance_arn(ctx.region, ctx.account_id, instance_id))


def _activation_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(20))


def _tags_in(call: Call, name: str = "Tags", *, required: bool = False) -> dict[str, str]:
    raw = call.body.get(name)
    if raw is None:
        if required:
            raise validation_error([(None, name[:1].lower() + name[1:],
                                     "Member must not be null")])
        return {}
    if not isinstance(raw, list):
        raise AwsError("SerializationException", f"Expected list for member '{name}'")
    tags: dict[str, str] = {}
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise AwsError("SerializationException", f"Expected structure in '{name}'")
        key = require_str(item, "Key", 1, 128, target=f"tags.{i}.member.key")
        value = require_str(item, "Value", 0, 256, target=f"tags.{i}.member.value")
        tags[key] = value
    if len(raw) > 1000:
        raise validation_error([(raw, "tags", "Member must have length less than or equal to "
                                 "1000")])
    return tags


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _timestamp(call: Call, name: str) -> float | None:
    value = call.body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise AwsError("SerializationException", f"Expected timestamp for member '{name}'")
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise AwsError("SerializationException",
                           f"Invalid timestamp for member '{name}'") from None
    return float(value)


# ============================================================== activations


@operation("CreateActivation")
async def create_activation(call: Call) -> dict[str, Any]:
    body = call.body
    iam_role = require_str(body, "IamRole", 0, 64)
    description = optional_str(body, "Description", 0, 256) or ""
    default_name = optional_str(body, "DefaultInstanceName", 0, 256)
    limit = optional_int(body, "RegistrationLimit", 1, 1000) or 1
    expires = _timestamp(call, "ExpirationDate")
    tags = _tags_in(call)
    now = time.time()
    if expires is None:
        expires = now + DEFAULT_ACTIVATION_TTL
    elif expires <= now:
        raise AwsError("InvalidParameters", "ExpirationDate must be in the future.")
    elif expires - now > MAX_ACTIVATION_TTL + 60:
        raise AwsError("InvalidParameters",
                       "ExpirationDate must be at most 30 days in the future.")
    await call.authorize("ssm:CreateActivation", None, iam_role=iam_role)
    activation, code = await call.ctx.store.create_activation(
        iam_role=iam_role, expiration_date=expires, registration_limit=limit,
        description=description, default_instance_name=default_name, tags=tags,
        activation_code=_activation_code(), now=now)
    return {"ActivationId": activation.activation_id, "ActivationCode": code}


_ACTIVATION_FILTER_KEYS = ("ActivationIds", "DefaultInstanceName", "IamRole")


@operation("DescribeActivations")
async def describe_activations(call: Call) -> dict[str, Any]:
    body = call.body
    max_results = optional_int(body, "MaxResults", 1, 50)
    next_token = optional_str(body, "NextToken")
    filters = body.get("Filters") or []
    if not isinstance(filters, list):
        raise AwsError("SerializationException", "Expected list for member 'Filters'")
    ids: list[str] | None = None
    roles: list[str] | None = None
    names: list[str] | None = None
    for f in filters:
        if not isinstance(f, dict):
            raise AwsError("SerializationException", "Expected structure in 'Filters'")
        key = f.get("FilterKey")
        values = f.get("FilterValues") or []
        if key not in _ACTIVATION_FILTER_KEYS:
            raise validation_error([(key, "filters.1.member.filterKey",
                                     "Member must satisfy enum value set: "
                                     f"[{', '.join(_ACTIVATION_FILTER_KEYS)}]")])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise AwsError("SerializationException", "Expected list of strings for FilterValues")
        if key == "ActivationIds":
            ids = list(values)
        elif key == "IamRole":
            roles = list(values)
        else:
            names = list(values)
    await call.authorize("ssm:DescribeActivations", None)
    try:
        page = await call.ctx.store.list_activations(
            activation_ids=ids, iam_roles=roles, max_results=max_results or 50,
            next_token=next_token)
    except InvalidNextTokenError:
        raise AwsError("InvalidNextToken", "The specified token is not valid.") from None
    now = time.time()
    items = []
    for act in page.items:
        if names is not None and (act.default_instance_name or "") not in names:
            continue
        item: dict[str, Any] = {
            "ActivationId": act.activation_id, "Description": act.description,
            "IamRole": act.iam_role, "RegistrationLimit": act.registration_limit,
            "RegistrationsCount": act.registrations_count,
            "ExpirationDate": act.expiration_date, "Expired": act.expired(now),
            "CreatedDate": act.created_date, "Tags": _tag_list(act.tags)}
        if act.default_instance_name:
            item["DefaultInstanceName"] = act.default_instance_name
        items.append(item)
    out: dict[str, Any] = {"ActivationList": items}
    if page.next_token:
        out["NextToken"] = page.next_token
    return out


@operation("DeleteActivation")
async def delete_activation(call: Call) -> dict[str, Any]:
    activation_id = require_str(call.body, "ActivationId", pattern=ACTIVATION_ID_RE)
    await call.authorize("ssm:DeleteActivation", None, activation_id=activation_id)
    if not await call.ctx.store.delete_activation(activation_id):
        raise AwsError("InvalidActivationId", f"Activation ID {activation_id} is not valid.")
    return {}


# ============================================================== registration


@operation("RegisterManagedInstance", auth="anonymous")
async def register_managed_instance(call: Call) -> dict[str, Any]:
    body = call.body
    code = require_str(body, "ActivationCode", 20, 250)
    activation_id = require_str(body, "ActivationId", 36, 36)
    public_key = require_str(body, "PublicKey", 392, 2048)
    key_type = optional_str(body, "PublicKeyType") or "Rsa"
    fingerprint = require_str(body, "Fingerprint", 1, 128)
    if key_type != "Rsa":
        raise AwsError("InvalidParameters", f"PublicKeyType {key_type} is not supported.")
    try:
        load_public_key_b64(public_key)
    except ValueError:
        raise AwsError("InvalidParameters", "PublicKey is not a base64 RSA public key.") from None
    await call.authorize("ssm:RegisterManagedInstance", None, activation_id=activation_id)
    result = await call.ctx.store.register_instance(
        activation_id=activation_id, activation_code=code, public_key=public_key,
        public_key_type=key_type, fingerprint=fingerprint, region=call.ctx.region)
    if result.outcome is RegistrationOutcome.NOT_FOUND:
        raise AwsError("InvalidActivationId", "Activation ID is not valid.")
    if result.outcome is RegistrationOutcome.BAD_CODE:
        raise AwsError("InvalidActivation", "Activation ID/Code is not valid.")
    if result.outcome is RegistrationOutcome.EXPIRED:
        raise AwsError("InvalidActivation", "Activation has expired.")
    if result.outcome is RegistrationOutcome.LIMIT_REACHED:
        raise AwsError("InvalidActivation", "Activation has reached its registration limit.")
    assert result.instance is not None
    return {"InstanceId": result.instance.instance_id}


@operation("RequestManagedInstanceRoleToken", auth="rsa")
async def request_role_token(call: Call) -> dict[str, Any]:
    instance_id = call.caller.instance_id
    fingerprint = optional_str(call.body, "Fingerprint")
    store = call.ctx.store
    instance = await store.get_instance(instance_id)
    if instance is None:
        raise AwsError("UnrecognizedClientException",
                       "The security token included in the request is invalid.")
    await call.authorize("ssm:RequestManagedInstanceRoleToken",
                         instance_arn(call.ctx, instance_id), instance_id=instance_id,
                         no_permission_required=True)
    if instance.fingerprint and fingerprint is not None and fingerprint != instance.fingerprint:
        raise AwsError("MachineFingerprintDoesNotMatch",
                       "The machine fingerprint does not match the registered one.")
    if not instance.fingerprint and fingerprint:
        await store.set_instance_fingerprint(instance_id, fingerprint)
    cred = await store.issue_credential(principal_type="instance", principal_id=instance_id,
                                        ttl=call.ctx.config.credential_ttl)
    assert cred.session_token is not None
    return {"AccessKeyId": cred.access_key_id, "SecretAccessKey": cred.secret_access_key,
            "SessionToken": cred.session_token, "TokenExpirationDate": cred.expiration,
            "UpdateKeyPair": False}


@operation("UpdateManagedInstancePublicKey", auth="rsa")
async def update_public_key(call: Call) -> dict[str, Any]:
    instance_id = call.caller.instance_id
    new_key = require_str(call.body, "NewPublicKey", 392, 2048)
    key_type = optional_str(call.body, "NewPublicKeyType") or "Rsa"
    try:
        load_public_key_b64(new_key)
    except ValueError:
        raise AwsError("InvalidParameters", "NewPublicKey is not a base64 RSA public key.") \
            from None
    await call.authorize("ssm:UpdateManagedInstancePublicKey",
                         instance_arn(call.ctx, instance_id), instance_id=instance_id,
                         no_permission_required=True)
    await call.ctx.store.set_instance_public_key(instance_id, new_key, key_type)
    return {}


# ============================================================== health


def _field(body: dict[str, Any], name: str, limit: int = 256) -> str | None:
    value = body.get(name)
    if not isinstance(value, str):
        return None
    return value[:limit]


@operation("UpdateInstanceInformation")
async def update_instance_information(call: Call) -> dict[str, Any]:
    # Lenient on purpose: an agent whose minimal ping fails hibernates (agent spec §6.2).
    instance_id = call.body.get("InstanceId")
    if not isinstance(instance_id, str) or not instance_id:
        if call.caller.is_instance:
            instance_id = call.caller.instance_id
        else:
            raise validation_error([(None, "instanceId", "Member must not be null")])
    await call.authorize("ssm:UpdateInstanceInformation", instance_arn(call.ctx, instance_id),
                         instance_id=instance_id)
    body = call.body
    platform = _field(body, "PlatformType")
    if platform is not None:
        platform = PLATFORM_NAMES.get(platform.lower(), platform)
    found = await call.ctx.store.update_instance_info(
        instance_id, agent_name=_field(body, "AgentName"),
        agent_version=_field(body, "AgentVersion", 64), platform_type=platform,
        platform_name=_field(body, "PlatformName"),
        platform_version=_field(body, "PlatformVersion", 128),
        ip_address=_field(body, "IPAddress", 64), computer_name=_field(body, "ComputerName"),
        ssm_connection_channel=_field(body, "SSMConnectionChannel", 32) or None)
    if not found and not call.caller.is_instance:
        raise AwsError("InvalidInstanceId", f"Instance {instance_id} is not registered.")
    return {}


@operation("ListInstanceAssociations")
async def list_instance_associations(call: Call) -> dict[str, Any]:
    instance_id = optional_str(call.body, "InstanceId") or call.caller.instance_id
    await call.authorize("ssm:ListInstanceAssociations",
                         instance_arn(call.ctx, instance_id) if instance_id else None,
                         instance_id=instance_id)
    return {"Associations": []}


@operation("GetMessages", prefix="EC2WindowsMessageDeliveryService")
async def get_messages(call: Call) -> dict[str, Any]:
    destination = optional_str(call.body, "Destination") or call.caller.instance_id
    request_id = optional_str(call.body, "MessagesRequestId") or ""
    await call.authorize("ec2messages:GetMessages",
                         instance_arn(call.ctx, destination) if destination else None,
                         instance_id=destination)
    hold = call.ctx.config.get_messages_hold
    if hold > 0:
        await asyncio.sleep(hold)
    return {"Destination": destination, "Messages": [], "MessagesRequestId": request_id}


for _name in ("AcknowledgeMessage", "DeleteMessage", "FailMessage", "SendReply",
              "GetEndpoint"):
    async def _noop(call: Call, _n: str = _name) -> dict[str, Any]:
        await call.authorize(f"ec2messages:{_n}", None,
                             instance_id=call.caller.instance_id or None)
        return {}
    operation(_name, prefix="EC2WindowsMessageDeliveryService")(_noop)


# ============================================================== describe


FILTER_KEYS = ("InstanceIds", "AgentVersion", "PingStatus", "PlatformTypes", "ActivationIds",
               "IamRole", "ResourceType", "AssociationStatus")
PING_STATUSES = ("Online", "ConnectionLost", "Inactive")
PLATFORM_TYPES = ("Windows", "Linux", "MacOS")
RESOURCE_TYPES = ("ManagedInstance", "EC2Instance")


def _filter_values(key: str, values: list[str]) -> list[str]:
    if key == "PingStatus":
        allowed: tuple[str, ...] = PING_STATUSES
    elif key == "PlatformTypes":
        allowed = PLATFORM_TYPES
    elif key == "ResourceType":
        allowed = RESOURCE_TYPES
    else:
        return values
    bad = [v for v in values if v not in allowed]
    if bad:
        raise AwsError("InvalidInstanceInformationFilterValue",
                       f"The filter value {bad[0]} is not valid for {key}. Valid values: "
                       f"{', '.join(allowed)}")
    return values


def _collect_filters(body: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, list[str]],
                                                    list[str] | None]:
    """(plain filters, tag filters, tag keys) from both filter styles, ANDed."""
    plain: dict[str, list[str]] = {}
    tags: dict[str, list[str]] = {}
    tag_keys: list[str] | None = None

    def add(key: str, values: list[str]) -> None:
        if key in plain:
            plain[key] = [v for v in plain[key] if v in values]
        else:
            plain[key] = values

    old_style = body.get("InstanceInformationFilterList")
    if old_style is not None:
        if not isinstance(old_style, list):
            raise AwsError("SerializationException",
                           "Expected list for member 'InstanceInformationFilterList'")
        for f in old_style:
            if not isinstance(f, dict):
                raise AwsError("SerializationException", "Expected structure in filter list")
            key = f.get("key")
            values = f.get("valueSet")
            if not isinstance(key, str) or key not in FILTER_KEYS:
                raise AwsError("InvalidFilterKey", f"The filter key {key} is not valid.")
            if not isinstance(values, list) or not values or \
                    not all(isinstance(v, str) for v in values):
                raise AwsError("InvalidInstanceInformationFilterValue",
                               f"The filter {key} needs 1 to 100 string values.")
            add(key, _filter_values(key, values))
    new_style = body.get("Filters")
    if new_style is not None:
        if not isinstance(new_style, list):
            raise AwsError("SerializationException", "Expected list for member 'Filters'")
        for f in new_style:
            if not isinstance(f, dict):
                raise AwsError("SerializationException", "Expected structure in 'Filters'")
            key = f.get("Key")
            values = f.get("Values")
            if not isinstance(values, list) or not values or \
                    not all(isinstance(v, str) for v in values):
                raise AwsError("InvalidInstanceInformationFilterValue",
                               f"The filter {key} needs 1 to 100 string values.")
            if isinstance(key, str) and key.startswith("tag:") and len(key) > 4:
                tags[key[4:]] = values
            elif key == "tag-key":
                tag_keys = values
            elif isinstance(key, str) and key in FILTER_KEYS:
                add(key, _filter_values(key, values))
            else:
                raise AwsError("InvalidFilterKey", f"The filter key {key} is not valid.")
    return plain, tags, tag_keys


def ping_status_of(ctx: ServerContext, instance_id: str) -> str:
    return "Online" if ctx.control.is_connected(instance_id) else "ConnectionLost"


def describe_instance(ctx: ServerContext, inst: ManagedInstance) -> dict[str, Any]:
    item: dict[str, Any] = {
        "InstanceId": inst.instance_id,
        "PingStatus": ping_status_of(ctx, inst.instance_id),
        "ResourceType": inst.resource_type or "ManagedInstance",
        "RegistrationDate": inst.registration_date,
        "IamRole": inst.iam_role,
        "IsLatestVersion": True,
        "SourceId": inst.instance_id,
        "SourceType": "AWS::SSM::ManagedInstance",
        "AssociationStatus": "Success",
    }
    optional = {
        "LastPingDateTime": inst.last_ping_date,
        "AgentVersion": inst.agent_version,
        "PlatformType": PLATFORM_NAMES.get((inst.platform_type or "").lower(),
                                           inst.platform_type),
        "PlatformName": inst.platform_name,
        "PlatformVersion": inst.platform_version,
        "ActivationId": inst.activation_id,
        "Name": inst.name,
        "IPAddress": inst.ip_address,
        "ComputerName": inst.computer_name,
    }
    item.update({k: v for k, v in optional.items() if v is not None and v != ""})
    return item


@operation("DescribeInstanceInformation")
async def describe_instance_information(call: Call) -> dict[str, Any]:
    body = call.body
    max_results = optional_int(body, "MaxResults", 5, 50)
    next_token = optional_str(body, "NextToken")
    plain, tag_filters, tag_keys = _collect_filters(body)
    ids = plain.get("InstanceIds")
    if ids is not None:
        bad = [i for i in ids if not INSTANCE_ID_RE.match(i)]
        if bad:
            raise AwsError("InvalidInstanceId", f"Instance Id {bad[0]} is not valid.")
    await call.authorize("ssm:DescribeInstanceInformation", None)
    resource = plain.get("ResourceType")
    if resource is not None and "ManagedInstance" not in resource:
        return {"InstanceInformationList": []}
    ping = plain.get("PingStatus")
    try:
        page = await call.ctx.store.list_instances(
            instance_ids=ids, platform_types=plain.get("PlatformTypes"),
            activation_ids=plain.get("ActivationIds"), agent_versions=plain.get("AgentVersion"),
            iam_roles=plain.get("IamRole"), tag_filters=tag_filters or None, tag_keys=tag_keys,
            max_results=max_results or 50, next_token=next_token)
    except InvalidNextTokenError:
        raise AwsError("InvalidNextToken", "The specified token is not valid.") from None
    items = [describe_instance(call.ctx, inst) for inst in page.items]
    if ping is not None:
        items = [i for i in items if i["PingStatus"] in ping]
    out: dict[str, Any] = {"InstanceInformationList": items}
    if page.next_token:
        out["NextToken"] = page.next_token
    return out


# ============================================================== tags

RESOURCE_TYPE_ENUM = ("Document", "ManagedInstance", "MaintenanceWindow", "Parameter",
                      "PatchBaseline", "OpsItem", "OpsMetadata", "Automation", "Association")


async def _tag_resource(call: Call) -> tuple[str, str, str]:
    rtype = require_enum(call.body, "ResourceType", RESOURCE_TYPE_ENUM)
    rid = require_str(call.body, "ResourceId")
    if rtype == "ManagedInstance":
        if not rid.startswith("mi-") or await call.ctx.store.get_instance(rid) is None:
            raise AwsError("InvalidResourceId", "The resource ID is not valid. Verify that "
                           "you entered the correct ID and try again.")
        return rtype, rid, instance_arn(call.ctx, rid)
    if rtype == "Document":
        found = await call.ctx.store.get_document(rid)
        if found is None:
            raise AwsError("InvalidResourceId", "The resource ID is not valid. Verify that "
                           "you entered the correct ID and try again.")
        return rtype, rid, str(document_arn(call.ctx.region, call.ctx.account_id, rid))
    raise AwsError("InvalidResourceType", "The resource type is not valid.")


@operation("AddTagsToResource")
async def add_tags(call: Call) -> dict[str, Any]:
    tags = _tags_in(call, required=True)
    rtype, rid, arn = await _tag_resource(call)
    await call.authorize("ssm:AddTagsToResource", arn, tag_keys=sorted(tags))
    store = call.ctx.store
    if rtype == "ManagedInstance":
        existing = await store.list_instance_tags(rid)
        if len(set(existing) | set(tags)) > MAX_TAGS_PER_RESOURCE:
            raise AwsError("TooManyTagsError", "The resource has too many tags.")
        try:
            await store.add_instance_tags(rid, tags)
        except NotFoundError:
            raise AwsError("InvalidResourceId", "The resource ID is not valid.") from None
    else:
        await store.add_document_tags(rid, tags)
    return {}


@operation("ListTagsForResource")
async def list_tags(call: Call) -> dict[str, Any]:
    rtype, rid, arn = await _tag_resource(call)
    await call.authorize("ssm:ListTagsForResource", arn)
    if rtype == "ManagedInstance":
        tags = await call.ctx.store.list_instance_tags(rid)
    else:
        found = await call.ctx.store.get_document(rid)
        tags = dict(found[0].tags) if found else {}
    return {"TagList": _tag_list(tags)}


@operation("RemoveTagsFromResource")
async def remove_tags(call: Call) -> dict[str, Any]:
    keys = call.body.get("TagKeys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise validation_error([(None, "tagKeys", "Member must not be null")])
    rtype, rid, arn = await _tag_resource(call)
    await call.authorize("ssm:RemoveTagsFromResource", arn, tag_keys=sorted(keys))
    if rtype == "ManagedInstance":
        await call.ctx.store.remove_instance_tags(rid, keys)
    else:
        await call.ctx.store.remove_document_tags(rid, keys)
    return {}


__all__ = ["describe_instance", "instance_arn", "optional_object", "ping_status_of"]
