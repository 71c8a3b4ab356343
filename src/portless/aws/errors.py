"""AWS service errors and their two wire encodings (awsJson ``__type`` and query-protocol XML).

Every module that answers an AWS client raises :class:`AwsError`; the web layer turns it into
a response with :meth:`AwsError.to_json` or :meth:`AwsError.to_xml` so the wording and status
codes match what botocore and the Go SDK expect from real AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "INVALID_SIGNATURE_MESSAGE",
    "UNRECOGNIZED_CLIENT_MESSAGE",
    "AwsError",
    "Violation",
    "access_denied",
    "constraint_violation",
    "format_validation_value",
    "incomplete_signature",
    "internal_server_error",
    "invalid_signature",
    "missing_authentication_token",
    "serialization_exception",
    "throttling",
    "unknown_operation",
    "unrecognized_client",
    "validation_error",
    "validation_exception",
]

UNRECOGNIZED_CLIENT_MESSAGE = "The security token included in the request is invalid."
INVALID_SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)

_SERVER_FAULTS = frozenset({"InternalServerError", "InternalFailure", "ServiceUnavailable"})


class AwsError(Exception):
    """An error as an AWS service reports it: a code, a human message and an HTTP status.

    The status defaults to 400 (client fault) and to 500 for ``InternalServerError`` and the
    other server-fault codes, which is what makes clients retry.
    """

    code: str
    message: str
    status: int

    def __init__(self, code: str, message: str = "", status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        if status is None:
            status = 500 if code in _SERVER_FAULTS else 400
        self.status = status

    @property
    def is_server_fault(self) -> bool:
        """True for 5xx errors (``Receiver`` in the XML form)."""
        return self.status >= 500

    def to_dict(self) -> dict[str, str]:
        """The awsJson error body as a dict."""
        return {"__type": self.code, "message": self.message}

    def to_json(self) -> bytes:
        """The awsJson1.0/1.1 error body: ``{"__type": code, "message": message}``."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")

    def to_xml(self, request_id: str, *, xmlns: str | None = None) -> bytes:
        """The AWS query-protocol (IAM/STS) error document.

        ``xmlns`` is the service namespace that IAM and STS put on ``ErrorResponse``
        (for example ``https://sts.amazonaws.com/doc/2011-06-15/``); botocore ignores it.
        """
        kind = "Receiver" if self.is_server_fault else "Sender"
        ns = f" xmlns={quoteattr(xmlns)}" if xmlns else ""
        doc = (
            f"<ErrorResponse{ns}>"
            f"<Error><Type>{kind}</Type><Code>{escape(self.code)}</Code>"
            f"<Message>{escape(self.message)}</Message></Error>"
            f"<RequestId>{escape(request_id)}</RequestId>"
            "</ErrorResponse>"
        )
        return doc.encode("utf-8")

    def __repr__(self) -> str:
        return f"AwsError(code={self.code!r}, message={self.message!r}, status={self.status})"


# --- validation messages ---------------------------------------------------------------

Violation = tuple[object, str, str]
"""One constraint violation: (value, member path such as ``target``, constraint text)."""


def format_validation_value(value: object) -> str:
    """Render a value the way AWS's validation messages do (``null``, ``'x'``, ``'[a, b]'``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_plain(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{_plain(k)}={_plain(v)}" for k, v in value.items()) + "}"
    else:
        text = str(value)
    return f"'{text}'"


def _plain(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


def validation_error(violations: Iterable[Violation]) -> AwsError:
    """A ValidationException listing one or more violations in AWS's exact message format.

    ``N validation error(s) detected: Value 'x' at 'target' failed to satisfy constraint: ...``
    with the violations joined by ``; ``.
    """
    items: Sequence[Violation] = list(violations)
    if not items:
        raise ValueError("validation_error needs at least one violation")
    parts = [
        f"Value {format_validation_value(value)} at '{target}' failed to satisfy constraint: "
        f"{constraint}"
        for value, target, constraint in items
    ]
    noun = "error" if len(items) == 1 else "errors"
    return validation_exception(f"{len(items)} validation {noun} detected: " + "; ".join(parts))


def constraint_violation(value: object, target: str, constraint: str) -> AwsError:
    """A ValidationException for a single violated constraint.

    Example: ``constraint_violation('x'*401, 'reason', 'Member must have length less than or
    equal to 400')``.
    """
    return validation_error([(value, target, constraint)])


# --- factories for the codes portless uses ---------------------------------------------


def validation_exception(message: str) -> AwsError:
    """ValidationException with a free-form message."""
    return AwsError("ValidationException", message)


def unrecognized_client(message: str = UNRECOGNIZED_CLIENT_MESSAGE) -> AwsError:
    """Unknown access key id / security token."""
    return AwsError("UnrecognizedClientException", message)


def invalid_signature(message: str = INVALID_SIGNATURE_MESSAGE) -> AwsError:
    """Signature mismatch, expired signature or wrongly scoped credential."""
    return AwsError("InvalidSignatureException", message)


def incomplete_signature(message: str) -> AwsError:
    """Malformed or incomplete ``Authorization`` header."""
    return AwsError("IncompleteSignatureException", message)


def missing_authentication_token(message: str = "Missing Authentication Token") -> AwsError:
    """The request carries no ``Authorization`` header at all."""
    return AwsError("MissingAuthenticationTokenException", message)


def access_denied(
    principal_arn: str | None = None,
    action: str | None = None,
    resource_arn: str | None = None,
    reason: str | None = None,
    *,
    message: str | None = None,
) -> AwsError:
    """AccessDeniedException, by default in IAM's ``User: … is not authorized to perform: …`` form."""
    if message is None:
        if principal_arn is None or action is None:
            message = "Access denied"
        else:
            message = f"User: {principal_arn} is not authorized to perform: {action}"
            if resource_arn is not None:
                message += f" on resource: {resource_arn}"
            if reason:
                message += f" {reason}" if reason.startswith("because") else f" because {reason}"
    return AwsError("AccessDeniedException", message)


def unknown_operation(message: str = "") -> AwsError:
    """The ``X-Amz-Target`` names no operation this endpoint serves."""
    return AwsError("UnknownOperationException", message)


def serialization_exception(message: str = "") -> AwsError:
    """The request body is not valid JSON for the operation's input shape."""
    return AwsError("SerializationException", message)


def internal_server_error(message: str = "An internal error occurred.") -> AwsError:
    """HTTP 500; clients retry it."""
    return AwsError("InternalServerError", message)


def throttling(message: str = "Rate exceeded") -> AwsError:
    """ThrottlingException (HTTP 400, retried by clients)."""
    return AwsError("ThrottlingException", message)
