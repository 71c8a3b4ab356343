"""aiohttp glue for the IAM and STS query endpoints on the server's ``POST /``.

The server's ``POST /`` sees two protocols: awsJson (``X-Amz-Target: AmazonSSM.…``) and the
query protocol (form body ``Action=…&Version=…``) that IAM and STS use. For the latter it
calls :func:`handle_query_request`, which picks IAM or STS from the SigV4 credential scope's
service, authenticates, authorizes every operation and answers in XML, errors included
(with the query protocol's spelling of the authentication error codes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from portless.aws.errors import AwsError
from portless.aws.sigv4 import SignedRequest, parse_authorization
from portless.iam.authorizer import Authorizer
from portless.iam.principal import Principal
from portless.iam.query import IAM_NAMESPACE, STS_NAMESPACE, is_query_request, parse_form
from portless.iam.query_api import handle_iam
from portless.iam.sts_api import handle_sts
from portless.store import Store

__all__ = [
    "QUERY_SERVICES",
    "Authenticate",
    "handle_query_request",
    "is_query_request",
    "query_auth_error",
]

QUERY_SERVICES = frozenset({"iam", "sts"})

Authenticate = Callable[[SignedRequest, frozenset[str]], Awaitable[Principal]]
"""``(signed request, allowed services) -> caller``; raises AwsError. The server's
``Authenticator.authenticate`` has this shape, as does a partial of
:func:`portless.iam.principal.authenticate`."""

# awsJson spelling -> query-protocol spelling (IAM/STS answer these with 403 or 400).
_QUERY_AUTH_CODES: dict[str, tuple[str, int]] = {
    "UnrecognizedClientException": ("InvalidClientTokenId", 403),
    "InvalidSignatureException": ("SignatureDoesNotMatch", 403),
    "IncompleteSignatureException": ("IncompleteSignature", 400),
    "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 403),
    "ExpiredTokenException": ("ExpiredToken", 403),
}


def query_auth_error(error: AwsError) -> AwsError:
    """The query-protocol form of an authentication error raised by the SigV4 layer."""
    mapped = _QUERY_AUTH_CODES.get(error.code)
    if mapped is None:
        return error
    code, status = mapped
    return AwsError(code, error.message, status)


def _xml(status: int, body: bytes, request_id: str) -> web.Response:
    return web.Response(
        body=body,
        status=status,
        content_type="text/xml",
        headers={"x-amzn-RequestId": request_id},
    )


async def handle_query_request(
    request: web.Request,
    *,
    store: Store,
    authorizer: Authorizer,
    authenticate: Authenticate,
    request_id: str,
    account_id: str | None = None,
    body: bytes | None = None,
) -> web.Response:
    """Serve an IAM or STS call that arrived on ``POST /`` (see :func:`is_query_request`).

    *body* is the already-read request body, if the caller read it to sniff the protocol.
    """
    raw = body if body is not None else await request.read()
    params = parse_form(raw)
    action = params.get("Action", "")
    signed = SignedRequest.from_target(request.method, request.raw_path, request.headers, raw)
    audit = {"request_id": request_id, "source_ip": request.remote}
    service = "iam"
    try:
        service = parse_authorization(signed.header_map.get("authorization")).service
        if service not in QUERY_SERVICES:
            raise AwsError(
                "InvalidClientTokenId",
                f"Credential should be scoped to correct service: 'iam' or 'sts', not '{service}'.",
                403,
            )
        caller = await authenticate(signed, frozenset({service}))
    except AwsError as exc:
        error = query_auth_error(exc)
        authorizer.deny(None, f"{service}:{action}", None, error, audit)
        namespace = STS_NAMESPACE if service == "sts" else IAM_NAMESPACE
        return _xml(error.status, error.to_xml(request_id, xmlns=namespace), request_id)
    bound = authorizer.bind(
        caller, source_ip=request.remote, secure_transport=request.secure, request_id=request_id
    )
    if service == "sts":
        status, payload = await handle_sts(
            store, caller, params, request_id, authorize=bound, account_id=account_id
        )
    else:
        status, payload = await handle_iam(
            store,
            caller,
            params,
            request_id,
            authorize=bound,
            account_id=account_id,
        )
    return _xml(status, payload, request_id)
