"""Documents: Create/Get/Update/Describe/List/DeleteDocument, plus lookups for StartSession.

The AWS-managed session documents are built in (owner `Amazon`, version 1,
read-only).  `SSM-SessionManagerRunShell`, the preferences document, is built
in until a user creates or updates it; from then on the user's latest version
is what sessions use (as seed 002 does with Terraform).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
from typing import Any

from portless.aws.arn import document_arn
from portless.aws.awsjson import (
    optional_enum,
    optional_int,
    optional_str,
    require_str,
)
from portless.aws.errors import AwsError, validation_error
from portless.server.api import operation
from portless.server.context import Call, ServerContext
from portless.server.documents import (
    BUILTIN_DOCUMENTS,
    PREFERENCES_DOCUMENT,
    builtin_content,
    document_parameters,
    is_builtin,
    is_reserved_name,
    parse_content,
    validate_session_document,
)
from portless.store import (
    AlreadyExistsError,
    Document,
    DocumentVersion,
    DuplicateContentError,
    InvalidNextTokenError,
    InvalidOperationError,
    NotFoundError,
)

NAME_PATTERN = r"^[a-zA-Z0-9_\-.]{3,128}$"
NAME_OR_ARN_PATTERN = r"^[a-zA-Z0-9_\-.:/]{3,128}$"
VERSION_PATTERN = r"^([$]LATEST|[$]DEFAULT|^[1-9][0-9]*$)$"
DOCUMENT_TYPES = ("Command", "Policy", "Automation", "Session", "Package", "ApplicationConfiguration",
                  "ApplicationConfigurationSchema", "DeploymentStrategy", "ChangeCalendar",
                  "Automation.ChangeTemplate", "ProblemAnalysis", "ProblemAnalysisTemplate",
                  "CloudFormation", "ConformancePackTemplate", "QuickSetup")
FORMATS = ("YAML", "JSON", "TEXT")
MAX_DOCUMENT_SIZE = 64 * 1024
AMAZON = "Amazon"
BUILTIN_CREATED = 1546300800.0   # 2019-01-01: a fixed date for the AWS-managed documents


def document_name_from(name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        return name_or_arn.rsplit("/", 1)[-1]
    return name_or_arn


def _invalid_document(name: str) -> AwsError:
    return AwsError("InvalidDocument", f"Document with name {name} does not exist.")


async def _stored(ctx: ServerContext, name: str,
                  version: str | None = None) -> tuple[Document, DocumentVersion] | None:
    return await ctx.store.get_document(name, version)


async def load_session_doc(ctx: ServerContext, name: str) -> dict[str, Any] | None:
    """The parsed content StartSession uses for `name` (user's latest version first)."""
    found = await _stored(ctx, name, "$LATEST")
    if found is not None:
        doc, ver = found
        if doc.document_type != "Session":
            raise AwsError("InvalidDocument",
                           f"Document {name} is not a Session document.")
        return parse_content(ver.content, ver.document_format)
    if is_builtin(name):
        return copy.deepcopy(BUILTIN_DOCUMENTS[name])
    return None


async def load_preferences(ctx: ServerContext) -> dict[str, Any]:
    found = await _stored(ctx, PREFERENCES_DOCUMENT, "$LATEST")
    if found is None:
        return dict(BUILTIN_DOCUMENTS[PREFERENCES_DOCUMENT])
    try:
        return parse_content(found[1].content, found[1].document_format)
    except AwsError:
        return dict(BUILTIN_DOCUMENTS[PREFERENCES_DOCUMENT])


def _hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _parsed_or_empty(content: str, fmt: str) -> dict[str, Any]:
    try:
        return parse_content(content, fmt)
    except AwsError:
        return {}


def _description(ctx: ServerContext, *, name: str, owner: str, created: float,
                 version: int, latest: int, default: int, content: str, fmt: str,
                 doc_type: str, version_name: str | None, display_name: str | None,
                 target_type: str | None, tags: dict[str, str]) -> dict[str, Any]:
    parsed = _parsed_or_empty(content, fmt)
    out: dict[str, Any] = {
        "Hash": _hash(content), "HashType": "Sha256", "Name": name, "Owner": owner,
        "CreatedDate": created, "Status": "Active", "DocumentVersion": str(version),
        "Parameters": document_parameters(parsed),
        "PlatformTypes": ["Windows", "Linux", "MacOS"], "DocumentType": doc_type,
        "SchemaVersion": str(parsed.get("schemaVersion", "")),
        "LatestVersion": str(latest), "DefaultVersion": str(default), "DocumentFormat": fmt,
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
    }
    if isinstance(parsed.get("description"), str):
        out["Description"] = parsed["description"]
    if version_name:
        out["VersionName"] = version_name
    if display_name:
        out["DisplayName"] = display_name
    if target_type:
        out["TargetType"] = target_type
    return out


def _stored_description(ctx: ServerContext, doc: Document,
                        ver: DocumentVersion) -> dict[str, Any]:
    return _description(ctx, name=doc.name, owner=doc.owner, created=doc.created_date,
                        version=ver.version, latest=doc.latest_version,
                        default=doc.default_version, content=ver.content,
                        fmt=ver.document_format, doc_type=doc.document_type,
                        version_name=ver.version_name, display_name=doc.display_name,
                        target_type=doc.target_type, tags=dict(doc.tags))


def _builtin_description(ctx: ServerContext, name: str) -> dict[str, Any]:
    return _description(ctx, name=name, owner=AMAZON, created=BUILTIN_CREATED, version=1, latest=1,
                        default=1, content=builtin_content(name), fmt="JSON",
                        doc_type="Session", version_name=None, display_name=None,
                        target_type=None, tags={})


def _validate_content(content: str, fmt: str, doc_type: str) -> None:
    if len(content.encode()) > MAX_DOCUMENT_SIZE:
        raise AwsError("MaxDocumentSizeExceeded",
                       f"The content exceeds the maximum size of {MAX_DOCUMENT_SIZE} bytes.")
    if doc_type == "Session":
        validate_session_document(parse_content(content, fmt))
    elif fmt != "TEXT":
        parse_content(content, fmt)


def document_arn_for(ctx: ServerContext, name: str) -> str:
    """The ARN of a session document: AWS-owned ones carry no account, as at AWS."""
    if is_builtin(name) and name != PREFERENCES_DOCUMENT:
        return str(document_arn(ctx.region, None, name))
    return str(document_arn(ctx.region, ctx.account_id, name))


@operation("CreateDocument")
async def create_document(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    body = call.body
    content = require_str(body, "Content", 1)
    name = require_str(body, "Name", pattern=NAME_PATTERN)
    doc_type = optional_enum(body, "DocumentType", DOCUMENT_TYPES) or "Command"
    fmt = optional_enum(body, "DocumentFormat", FORMATS) or "JSON"
    version_name = optional_str(body, "VersionName", pattern=r"^[a-zA-Z0-9_\-.]{1,128}$")
    display_name = optional_str(body, "DisplayName", 0, 1024)
    target_type = optional_str(body, "TargetType", 0, 200)
    tags = {}
    raw_tags = body.get("Tags")
    if isinstance(raw_tags, list):
        for i, item in enumerate(raw_tags, start=1):
            if isinstance(item, dict):
                tags[require_str(item, "Key", 1, 128, target=f"tags.{i}.member.key")] = \
                    require_str(item, "Value", 0, 256, target=f"tags.{i}.member.value")
    if is_reserved_name(name):
        raise validation_error([(name, "name", "Member must not start with aws, amazon or "
                                 "amzn (reserved names)")])
    await call.authorize("ssm:CreateDocument", document_arn_for(ctx, name), document_name=name)
    _validate_content(content, fmt, doc_type)
    try:
        doc, ver = await ctx.store.create_document(
            name, content, document_type=doc_type, document_format=fmt, owner=ctx.account_id,
            version_name=version_name, display_name=display_name, target_type=target_type,
            tags=tags)
    except AlreadyExistsError:
        raise AwsError("DocumentAlreadyExists", "The specified document already exists.") \
            from None
    return {"DocumentDescription": _stored_description(ctx, doc, ver)}


@operation("UpdateDocument")
async def update_document(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    body = call.body
    content = require_str(body, "Content", 1)
    name = document_name_from(require_str(body, "Name", pattern=NAME_OR_ARN_PATTERN))
    version = optional_str(body, "DocumentVersion", pattern=VERSION_PATTERN)
    fmt = optional_enum(body, "DocumentFormat", FORMATS)
    version_name = optional_str(body, "VersionName", pattern=r"^[a-zA-Z0-9_\-.]{1,128}$")
    display_name = optional_str(body, "DisplayName", 0, 1024)
    await call.authorize("ssm:UpdateDocument", document_arn_for(ctx, name), document_name=name)
    store = ctx.store
    found = await store.get_document(name, "$LATEST")
    if found is None:
        if name == PREFERENCES_DOCUMENT:
            # The preferences document exists implicitly; updating it creates the
            # account's copy (version 1 = the built-in defaults, version 2 = this).
            await store.create_document(name, builtin_content(name), document_type="Session",
                                        document_format="JSON", owner=ctx.account_id)
            found = await store.get_document(name, "$LATEST")
        elif is_builtin(name):
            raise AwsError("InvalidDocumentOperation",
                           f"You can't update the AWS-owned document {name}.")
        if found is None:
            raise _invalid_document(name)
    doc, latest = found
    if version not in (None, "$LATEST") and str(version) != str(doc.latest_version):
        raise AwsError("InvalidDocumentVersion",
                       "Only the latest version of a document can be updated.")
    fmt = fmt or latest.document_format
    _validate_content(content, fmt, doc.document_type)
    try:
        doc, ver = await store.add_document_version(name, content, document_format=fmt,
                                                    version_name=version_name,
                                                    display_name=display_name)
    except DuplicateContentError:
        raise AwsError("DuplicateDocumentContent",
                       "The content of the association document matches another document. "
                       "Change the content of the document and try again.") from None
    except NotFoundError:
        raise _invalid_document(name) from None
    if doc.document_type == "Session":
        doc = await store.set_default_document_version(name, ver.version)
    return {"DocumentDescription": _stored_description(ctx, doc, ver)}


def _version_arg(call: Call) -> str | None:
    return optional_str(call.body, "DocumentVersion", pattern=VERSION_PATTERN)


@operation("DescribeDocument")
async def describe_document(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    name = document_name_from(require_str(call.body, "Name", pattern=NAME_OR_ARN_PATTERN))
    version = _version_arg(call)
    await call.authorize("ssm:DescribeDocument", document_arn_for(ctx, name), document_name=name)
    found = await ctx.store.get_document(name, version)
    if found is not None:
        return {"Document": _stored_description(ctx, *found)}
    if is_builtin(name) and version in (None, "$LATEST", "$DEFAULT", "1") \
            and await ctx.store.get_document(name) is None:
        return {"Document": _builtin_description(ctx, name)}
    if version is not None and await ctx.store.get_document(name) is not None:
        raise AwsError("InvalidDocumentVersion", "The document version is not valid or does "
                       "not exist.")
    raise _invalid_document(name)


@operation("GetDocument")
async def get_document(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    name = document_name_from(require_str(call.body, "Name", pattern=NAME_OR_ARN_PATTERN))
    version = _version_arg(call)
    want_fmt = optional_enum(call.body, "DocumentFormat", FORMATS)
    await call.authorize("ssm:GetDocument", document_arn_for(ctx, name), document_name=name)
    found = await ctx.store.get_document(name, version)
    if found is not None:
        doc, ver = found
        content, fmt = _convert(ver.content, ver.document_format, want_fmt)
        out: dict[str, Any] = {
            "Name": doc.name, "CreatedDate": ver.created_date,
            "DocumentVersion": str(ver.version), "Status": "Active", "Content": content,
            "DocumentType": doc.document_type, "DocumentFormat": fmt}
        if ver.version_name:
            out["VersionName"] = ver.version_name
        if doc.display_name:
            out["DisplayName"] = doc.display_name
        return out
    if is_builtin(name) and version in (None, "$LATEST", "$DEFAULT", "1") \
            and await ctx.store.get_document(name) is None:
        content, fmt = _convert(builtin_content(name), "JSON", want_fmt)
        return {"Name": name, "CreatedDate": BUILTIN_CREATED, "DocumentVersion": "1", "Status": "Active",
                "Content": content, "DocumentType": "Session", "DocumentFormat": fmt}
    if version is not None and await ctx.store.get_document(name) is not None:
        raise AwsError("InvalidDocumentVersion", "The document version is not valid or does "
                       "not exist.")
    raise _invalid_document(name)


def _convert(content: str, fmt: str, want: str | None) -> tuple[str, str]:
    if want is None or want == fmt or fmt == "TEXT" or want == "TEXT":
        return content, fmt
    try:
        obj = parse_content(content, fmt)
    except AwsError:
        return content, fmt
    if want == "JSON":
        return json.dumps(obj, indent=2), "JSON"
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:  # pragma: no cover
        return content, fmt
    return str(yaml.safe_dump(obj, sort_keys=False)), "YAML"


def _identifier(ctx: ServerContext, doc: Document, ver: DocumentVersion | None) -> dict[str, Any]:
    parsed = _parsed_or_empty(ver.content, ver.document_format) if ver else {}
    out: dict[str, Any] = {
        "Name": doc.name, "CreatedDate": doc.created_date, "Owner": doc.owner,
        "PlatformTypes": ["Windows", "Linux", "MacOS"],
        "DocumentVersion": str(doc.default_version), "DocumentType": doc.document_type,
        "SchemaVersion": str(parsed.get("schemaVersion", "")),
        "DocumentFormat": doc.document_format,
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(doc.tags.items())]}
    if doc.display_name:
        out["DisplayName"] = doc.display_name
    if doc.target_type:
        out["TargetType"] = doc.target_type
    return out


def _builtin_identifier(name: str) -> dict[str, Any]:
    return {"Name": name, "CreatedDate": BUILTIN_CREATED, "Owner": AMAZON,
            "PlatformTypes": ["Windows", "Linux", "MacOS"], "DocumentVersion": "1",
            "DocumentType": "Session", "SchemaVersion": "1.0", "DocumentFormat": "JSON",
            "Tags": []}


_LIST_KEYS = ("Name", "Owner", "PlatformTypes", "DocumentType")


@operation("ListDocuments")
async def list_documents(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    body = call.body
    max_results = optional_int(body, "MaxResults", 1, 50) or 50
    next_token = optional_str(body, "NextToken")
    types: list[str] | None = None
    owners: list[str] | None = None
    names: list[str] | None = None
    prefix: str | None = None
    for f in body.get("DocumentFilterList") or []:
        if not isinstance(f, dict) or f.get("key") not in _LIST_KEYS:
            raise AwsError("InvalidFilterKey", "The specified filter key is not valid.")
        value = f.get("value")
        if not isinstance(value, str):
            raise AwsError("InvalidFilterValue", "The specified filter value is not valid.")
        key = f["key"]
        if key == "Name":
            names = [value]
        elif key == "Owner":
            owners = [value]
        elif key == "DocumentType":
            types = [value]
    for f in body.get("Filters") or []:
        if not isinstance(f, dict) or not isinstance(f.get("Key"), str):
            raise AwsError("InvalidFilterKey", "The specified filter key is not valid.")
        key = f["Key"]
        values = f.get("Values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise AwsError("InvalidFilterValue", "The specified filter value is not valid.")
        if key == "DocumentType":
            types = list(values)
        elif key == "Owner":
            owners = list(values)
        elif key == "Name":
            names = list(values)
        elif key == "SearchKeyword" and values:
            prefix = values[0]
        elif key in ("PlatformTypes", "DocumentFormat", "TargetType") or key.startswith("tag:"):
            continue
        else:
            raise AwsError("InvalidFilterKey", "The specified filter key is not valid.")
    await call.authorize("ssm:ListDocuments", None)
    owner_set = {o for o in owners} if owners is not None else None
    want_self = owner_set is None or bool(owner_set & {"Self", "Private", "All", ctx.account_id})
    want_amazon = owner_set is None or bool(owner_set & {"Amazon", "Public", "All"})
    out_items: list[dict[str, Any]] = []
    token_out: str | None = None
    store_token = next_token
    builtin_phase = True
    if next_token and next_token.startswith("store:"):
        store_token = next_token[len("store:"):]
        builtin_phase = False
    elif next_token:
        raise AwsError("InvalidNextToken", "The specified token is not valid.")
    if builtin_phase and want_amazon and (types is None or "Session" in types):
        for name in sorted(BUILTIN_DOCUMENTS):
            if name == PREFERENCES_DOCUMENT:
                continue
            if names is not None and name not in names:
                continue
            if prefix is not None and prefix.lower() not in name.lower():
                continue
            out_items.append(_builtin_identifier(name))
        store_token = None
    if want_self:
        try:
            page = await ctx.store.list_documents(
                document_types=types, names=names, max_results=max_results,
                next_token=store_token)
        except InvalidNextTokenError:
            raise AwsError("InvalidNextToken", "The specified token is not valid.") from None
        for doc in page.items:
            if prefix is not None and prefix.lower() not in doc.name.lower():
                continue
            out_items.append(_identifier(ctx, doc, None))
        if page.next_token:
            token_out = "store:" + page.next_token
    out: dict[str, Any] = {"DocumentIdentifiers": out_items}
    if token_out:
        out["NextToken"] = token_out
    return out


@operation("DeleteDocument")
async def delete_document(call: Call) -> dict[str, Any]:
    ctx = call.ctx
    name = document_name_from(require_str(call.body, "Name", pattern=NAME_OR_ARN_PATTERN))
    version = optional_str(call.body, "DocumentVersion", pattern=VERSION_PATTERN)
    await call.authorize("ssm:DeleteDocument", document_arn_for(ctx, name), document_name=name)
    if is_builtin(name) and await ctx.store.get_document(name) is None:
        if name == PREFERENCES_DOCUMENT:
            raise _invalid_document(name)
        raise AwsError("InvalidDocumentOperation",
                       f"You can't delete the AWS-owned document {name}.")
    number: int | None = None
    if version is not None and version not in ("$LATEST", "$DEFAULT"):
        number = int(version)
    try:
        deleted = await ctx.store.delete_document(name, number)
    except InvalidOperationError as exc:
        raise AwsError("InvalidDocumentOperation", str(exc)) from None
    if not deleted:
        raise _invalid_document(name)
    return {}
