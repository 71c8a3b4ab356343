"""The AWS query protocol (IAM, STS): form-encoded requests in, XML documents out.

Both directions are driven by botocore's own service models, so the members, their
constraints and the output shapes are exactly the ones the SDKs use:

* :func:`parse_form` decodes the ``application/x-www-form-urlencoded`` body;
* :func:`parse_input` turns the flat ``Tags.member.1.Key=…`` parameters into the input
  shape's structure and validates it (required members, lengths, patterns, enums, ranges),
  raising ``ValidationError`` with AWS's ``N validation error(s) detected: …`` message;
* :func:`render_response` serialises a result ``dict`` by the output shape into
  ``<OpResponse xmlns=…><OpResult>…</OpResult><ResponseMetadata>…`` with lists as
  ``<member>``, timestamps in ISO 8601 and blobs in base64;
* :func:`render_error` is the ``<ErrorResponse>`` for an :class:`AwsError`.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from botocore.loaders import Loader  # type: ignore[import-untyped]
from botocore.model import (  # type: ignore[import-untyped]
    OperationModel,
    ServiceModel,
    Shape,
)

from portless.aws.errors import AwsError, Violation, validation_error

__all__ = [
    "IAM_NAMESPACE",
    "IAM_VERSION",
    "STS_NAMESPACE",
    "STS_VERSION",
    "format_timestamp",
    "invalid_action",
    "is_query_request",
    "operation_model",
    "parse_form",
    "parse_input",
    "render_error",
    "render_response",
    "serve_query",
    "service_model",
    "validation_failure",
]

IAM_NAMESPACE = "https://iam.amazonaws.com/doc/2010-05-08/"
IAM_VERSION = "2010-05-08"
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
STS_VERSION = "2011-06-15"

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@functools.cache
def service_model(service: str) -> ServiceModel:
    """botocore's model of *service* (``iam`` or ``sts``), loaded once."""
    loader = Loader()
    data = loader.load_service_model(service, "service-2")
    return ServiceModel(data, service_name=service)


def operation_model(service: str, name: str) -> OperationModel | None:
    """The operation named *name* (``CreateUser``), or None if the service has none."""
    model = service_model(service)
    if name not in model.operation_names:
        return None
    return model.operation_model(name)


def is_query_request(content_type: str | None, body: bytes) -> bool:
    """Whether a ``POST /`` is a query-protocol call (form body with ``Action=``) rather
    than awsJson (which carries ``X-Amz-Target``)."""
    if content_type is not None and not content_type.lower().startswith(FORM_CONTENT_TYPE):
        return False
    return any(part.startswith(b"Action=") for part in body.split(b"&"))


def parse_form(body: bytes | str) -> dict[str, str]:
    """Decode a form body; blank values are kept (an empty list is sent as ``Name=``)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return dict(parse_qsl(text, keep_blank_values=True))


def invalid_action(action: str, version: str) -> AwsError:
    return AwsError(
        "InvalidAction", f"Could not find operation {action} for version {version}", 400
    )


def validation_failure(violations: list[Violation]) -> AwsError:
    """IAM/STS spell the code ``ValidationError`` (awsJson services: ValidationException)."""
    return AwsError("ValidationError", validation_error(violations).message, 400)


# --------------------------------------------------------------------------- input


def _target(name: str) -> str:
    return name[:1].lower() + name[1:]


_JAVA_CLASSES = {
    r"\p{L}": r"\w",
    r"\p{N}": r"\w",
    r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
}


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    text = pattern
    for java, python in _JAVA_CLASSES.items():
        text = text.replace(java, python)
    try:
        return re.compile(text, re.DOTALL)
    except re.error:  # pragma: no cover - a pattern Python cannot express: not checked
        return None


class _Parser:
    def __init__(self, params: Mapping[str, str]) -> None:
        self.params = params
        self.violations: list[Violation] = []

    def has_prefix(self, prefix: str) -> bool:
        dotted = prefix + "."
        return prefix in self.params or any(k.startswith(dotted) for k in self.params)

    def value(self, shape: Shape, prefix: str, target: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            out: dict[str, Any] = {}
            for name, member in shape.members.items():
                wire = member.serialization.get("name", name)
                key = f"{prefix}.{wire}" if prefix else wire
                sub_target = f"{target}.{_target(name)}" if target else _target(name)
                if self.has_prefix(key):
                    out[name] = self.value(member, key, sub_target)
                elif name in shape.required_members:
                    self.violations.append((None, sub_target, "Member must not be null"))
            return out
        if kind == "list":
            items: list[Any] = []
            flattened = shape.serialization.get("flattened", False)
            item_name = shape.member.serialization.get("name", "member")
            n = 1
            while True:
                key = f"{prefix}.{n}" if flattened else f"{prefix}.{item_name}.{n}"
                if not self.has_prefix(key):
                    break
                items.append(self.value(shape.member, key, f"{target}.{n}.member"))
                n += 1
            self.check(shape, items, target)
            return items
        if kind == "map":
            result: dict[str, Any] = {}
            n = 1
            while self.has_prefix(f"{prefix}.entry.{n}"):
                k = self.params.get(f"{prefix}.entry.{n}.key", "")
                result[k] = self.value(shape.value, f"{prefix}.entry.{n}.value", target)
                n += 1
            return result
        raw = self.params.get(prefix, "")
        if kind in ("integer", "long"):
            try:
                number = int(raw)
            except ValueError:
                self.violations.append((raw, target, "Member must be a number"))
                return None
            self.check(shape, number, target)
            return number
        if kind == "boolean":
            return raw.lower() == "true"
        if kind == "blob":
            try:
                return base64.b64decode(raw)
            except ValueError:
                self.violations.append((raw, target, "Member must be base64 encoded"))
                return None
        if kind == "timestamp":
            try:
                return datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                self.violations.append((raw, target, "Member must be a timestamp"))
                return None
        self.check(shape, raw, target)
        return raw

    def check(self, shape: Shape, value: Any, target: str) -> None:
        meta = shape.metadata
        if isinstance(value, int):
            if "min" in meta and value < meta["min"]:
                self.violations.append(
                    (
                        value,
                        target,
                        f"Member must have value greater than or equal to {meta['min']}",
                    )
                )
            if "max" in meta and value > meta["max"]:
                self.violations.append(
                    (value, target, f"Member must have value less than or equal to {meta['max']}")
                )
            return
        size = len(value)
        noun = "length"
        if "min" in meta and size < meta["min"]:
            self.violations.append(
                (value, target, f"Member must have {noun} greater than or equal to {meta['min']}")
            )
            return
        if "max" in meta and size > meta["max"]:
            self.violations.append(
                (value, target, f"Member must have {noun} less than or equal to {meta['max']}")
            )
            return
        if isinstance(value, str):
            enum = getattr(shape, "enum", None)
            if enum and value not in enum:
                self.violations.append(
                    (value, target, f"Member must satisfy enum value set: [{', '.join(enum)}]")
                )
                return
            pattern = meta.get("pattern")
            if pattern and value:
                compiled = _compiled(pattern)
                if compiled is not None and compiled.fullmatch(value) is None:
                    self.violations.append(
                        (
                            value,
                            target,
                            f"Member must satisfy regular expression pattern: {pattern}",
                        )
                    )


def parse_input(op: OperationModel, params: Mapping[str, str]) -> dict[str, Any]:
    """The operation's input as a nested dict (only members present), validated by the
    model; raises ``ValidationError`` listing every violated constraint."""
    shape = op.input_shape
    if shape is None:
        return {}
    parser = _Parser(params)
    result = parser.value(shape, "", "")
    if parser.violations:
        raise validation_failure(parser.violations)
    assert isinstance(result, dict)
    return result


# --------------------------------------------------------------------------- output


def format_timestamp(value: float | datetime) -> str:
    """ISO 8601 in UTC as IAM writes it (``2024-05-01T12:00:00Z``)."""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(shape: Shape, value: Any) -> str:
    kind = shape.type_name
    if kind == "timestamp":
        return format_timestamp(value)
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "blob":
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode("ascii")
    if kind in ("integer", "long"):
        return str(int(value))
    if kind in ("float", "double"):
        return repr(float(value))
    return escape(str(value))


def _render(shape: Shape, value: Any, out: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, Mapping):
            raise TypeError(f"{shape.name} needs a mapping, got {type(value).__name__}")
        missing = [m for m in shape.required_members if value.get(m) is None]
        if missing:
            raise ValueError(f"{shape.name} is missing required members {missing}")
        for name, member in shape.members.items():
            item = value.get(name)
            if item is None:
                continue
            tag = member.serialization.get("name", name)
            out.append(f"<{tag}>")
            _render(member, item, out)
            out.append(f"</{tag}>")
        return
    if kind == "list":
        tag = shape.member.serialization.get("name", "member")
        for item in value:
            out.append(f"<{tag}>")
            _render(shape.member, item, out)
            out.append(f"</{tag}>")
        return
    if kind == "map":
        for key, item in value.items():
            out.append(f"<entry><key>{escape(str(key))}</key><value>")
            _render(shape.value, item, out)
            out.append("</value></entry>")
        return
    out.append(_scalar(shape, value))


def render_response(
    op: OperationModel, result: Mapping[str, Any] | None, request_id: str, xmlns: str
) -> bytes:
    """The success document for *op* with *result* (keys are output member names)."""
    name = op.name
    parts = [f'<{name}Response xmlns="{xmlns}">']
    shape = op.output_shape
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", f"{name}Result")
        parts.append(f"<{wrapper}>")
        _render(shape, result or {}, parts)
        parts.append(f"</{wrapper}>")
    parts.append(
        f"<ResponseMetadata><RequestId>{escape(request_id)}</RequestId></ResponseMetadata>"
    )
    parts.append(f"</{name}Response>")
    return "".join(parts).encode("utf-8")


def render_error(error: AwsError, request_id: str, xmlns: str) -> tuple[int, bytes]:
    """``(status, <ErrorResponse> document)`` for *error*."""
    return error.status, error.to_xml(request_id, xmlns=xmlns)


# --------------------------------------------------------------------------- dispatch

# service -> (API version, XML namespace, the code AWS gives an internal failure)
_SERVICES = {
    "iam": (IAM_VERSION, IAM_NAMESPACE, "ServiceFailure"),
    "sts": (STS_VERSION, STS_NAMESPACE, "InternalFailure"),
}


async def serve_query(
    service: str,
    params: Mapping[str, str],
    request_id: str,
    operations: Collection[str],
    run: Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any] | None]],
    log: logging.Logger,
) -> tuple[int, bytes]:
    """Serve one query-protocol request of *service* (``iam`` or ``sts``): ``(HTTP status,
    XML body)``.

    Checks ``Action`` (one of *operations*) and ``Version``, parses the parameters by the
    model, and renders what ``run(action, args)`` returns. AwsErrors become error
    documents; anything else is logged to *log* and answered as AWS's 500.
    """
    expected, namespace, failure = _SERVICES[service]
    try:
        action = params.get("Action", "")
        version = params.get("Version", expected)
        op = operation_model(service, action) if action in operations else None
        if op is None or version != expected:
            raise invalid_action(action, version)
        result = await run(action, parse_input(op, params))
        return 200, render_response(op, result, request_id, namespace)
    except AwsError as exc:
        return render_error(exc, request_id, namespace)
    except Exception:
        log.exception("%s %s failed", service.upper(), params.get("Action"))
        return render_error(
            AwsError(failure, "An internal error occurred.", 500), request_id, namespace
        )
