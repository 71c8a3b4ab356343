"""AWS Signature Version 4 (``Authorization`` header form): verify on the server, sign on the client.

The canonicalisation follows what botocore's ``SigV4Auth`` and aws-sdk-go's v4 signer produce
for the requests portless sees (JSON ``POST /``, the MGS REST calls and the signed WebSocket
GET), so signatures made by the stock AWS CLI, the session-manager-plugin and amazon-ssm-agent
verify here, and signatures made here verify at AWS.  Everything is a pure function over
method, path, query, headers, body and a clock; there is no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cached_property
from urllib.parse import quote, unquote_to_bytes, urlsplit

from portless.aws.errors import (
    AwsError,
    incomplete_signature,
    invalid_signature,
    missing_authentication_token,
    unrecognized_client,
)

__all__ = [
    "ALGORITHM",
    "DEFAULT_MAX_SKEW",
    "EMPTY_SHA256",
    "TIMESTAMP_FORMAT",
    "UNSIGNED_PAYLOAD",
    "ClientSigningPlan",
    "HeaderInput",
    "Headers",
    "ParsedAuth",
    "PreparedVerification",
    "SignedRequest",
    "VerifiedCaller",
    "authorization_header",
    "canonical_headers",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "compute_signature",
    "derive_signing_key",
    "format_timestamp",
    "host_from_url",
    "parse_authorization",
    "prepare_client_signature",
    "prepare_verification",
    "sign_request",
    "string_to_sign",
    "trim_header_value",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DEFAULT_MAX_SKEW = timedelta(minutes=5)
TERMINATOR = "aws4_request"

# Headers a signer never signs (hop-by-hop, or changed by proxies), as botocore does, plus the
# Authorization header itself.
UNSIGNABLE_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_QUERY_SAFE = "-_.~"
_PATH_SAFE = "/~"
_HEX_DIGITS = frozenset("0123456789abcdef")
_TIMESTAMP_SHAPE = re.compile(r"[0-9]{8}T[0-9]{6}Z")

# --- headers ---------------------------------------------------------------------------


class Headers:
    """A case-insensitive multi-map of HTTP header names (stored lower-case) to values.

    Built from a dict, an aiohttp/multidict mapping (every duplicate is kept) or a sequence of
    ``(name, value)`` pairs; values keep their arrival order, which matters when a header
    repeats, because SigV4 joins repeated values with commas.
    """

    __slots__ = ("_values",)

    def __init__(self, headers: HeaderInput = ()) -> None:
        self._values: dict[str, list[str]] = {}
        if isinstance(headers, Headers):
            for name, values in headers._values.items():
                self._values[name] = list(values)
            return
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        """The first value of ``name``, or None."""
        values = self._values.get(name.lower())
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order (empty if absent)."""
        return list(self._values.get(name.lower(), ()))

    def names(self) -> list[str]:
        """The distinct lower-case header names."""
        return list(self._values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


HeaderInput = Mapping[str, str] | Sequence[tuple[str, str]] | Headers
"""Anything :class:`Headers` can be built from."""


def _as_headers(headers: HeaderInput) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


def trim_header_value(value: str) -> str:
    """SigV4 "Trimall": strip the ends and collapse inner whitespace runs to one space."""
    return " ".join(value.split())


# --- canonicalisation ------------------------------------------------------------------


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal that also drops empty segments (``//``), as botocore does."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and kept else ""
    return lead + "/".join(kept) + trail


def canonical_uri(path: str) -> str:
    """The canonical URI of a raw (on-the-wire, already percent-encoded) path.

    Non-S3 services encode the path a second time, so ``%20`` on the wire becomes ``%2520``
    in the canonical request; both botocore and aws-sdk-go do this.
    """
    normalised = _remove_dot_segments(path) if path else "/"
    return quote(normalised or "/", safe=_PATH_SAFE)


def _reencode(component: str) -> str:
    # "+" is form-encoding for a space: botocore's AWSRequest.prepare() emits it for query
    # params it signed as "%20", and no SDK sends a bare "+" meaning a literal plus.
    return quote(unquote_to_bytes(component.replace("+", " ")), safe=_QUERY_SAFE)


def canonical_query_string(query: str) -> str:
    """The canonical form of a raw query string (without the ``?``).

    Each name and value is percent-decoded (``+`` as a space) and re-encoded with only
    ``A-Za-z0-9-_.~`` left bare, the pairs are sorted by (name, value) and a name without ``=`` gets an empty value.
    For a query that is already fully encoded (what botocore and aws-sdk-go send) this is the
    identity apart from the sort.
    """
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for item in query.split("&"):
        name, _sep, value = item.partition("=")
        pairs.append((_reencode(name), _reencode(value)))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_headers(headers: HeaderInput, signed_headers: Sequence[str]) -> str:
    """The canonical header block: ``name:value`` lines for the signed headers, each ending in
    a newline; repeated headers are joined with commas after trimming each value."""
    hmap = _as_headers(headers)
    lines = []
    for name in signed_headers:
        values = ",".join(trim_header_value(v) for v in hmap.get_all(name))
        lines.append(f"{name}:{values}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    path: str,
    query_string: str,
    headers: HeaderInput,
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request for a raw path and raw query string."""
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query_string(query_string),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def format_timestamp(moment: datetime) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC (a naive datetime is taken to be UTC)."""
    return _utc(moment).strftime(TIMESTAMP_FORMAT)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/{TERMINATOR}"


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    """The SigV4 string to sign: algorithm, timestamp, scope and the canonical request's hash."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key: HMAC chain over date, region, service and ``aws4_request``."""
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, TERMINATOR)


def compute_signature(signing_key: bytes, to_sign: str) -> str:
    """Hex HMAC-SHA256 of the string to sign."""
    return hmac.new(signing_key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


# --- the Authorization header ----------------------------------------------------------


@dataclass(frozen=True)
class ParsedAuth:
    """The parts of an ``AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`` header."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    raw: str

    @property
    def scope(self) -> str:
        """``date/region/service/aws4_request``."""
        return credential_scope(self.date, self.region, self.service)

    @property
    def signature_is_hex(self) -> bool:
        """True for an HMAC signature (64 lower-case hex digits); RSA ones are base64."""
        return len(self.signature) == 64 and set(self.signature) <= _HEX_DIGITS


def parse_authorization(header: str | None) -> ParsedAuth:
    """Split an ``Authorization`` header into its SigV4 parts.

    Raises MissingAuthenticationTokenException when there is no header and
    IncompleteSignatureException, with AWS's wording, when it is malformed.
    """
    if header is None or not header.strip():
        raise missing_authentication_token()
    text = header.strip()
    algorithm, _sep, rest = text.partition(" ")
    if algorithm != ALGORITHM:
        raise incomplete_signature(f"Unsupported AWS 'algorithm': '{algorithm}'")
    params: dict[str, str] = {}
    for part in rest.split(","):
        item = part.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise incomplete_signature(
                f"'{item}' not a valid key=value pair (missing equal-sign) in "
                f"Authorization header: '{text}'."
            )
        params[key.strip()] = value.strip()
    missing = [k for k in ("Credential", "Signature", "SignedHeaders") if not params.get(k)]
    if missing:
        required = " ".join(f"Authorization header requires '{k}' parameter." for k in missing)
        raise incomplete_signature(f"{required} Authorization={text}")
    credential = params["Credential"]
    elements = credential.split("/")
    if len(elements) != 5:
        raise incomplete_signature(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{credential}'"
        )
    access_key_id, date, region, service, terminator = elements
    if terminator != TERMINATOR:
        raise incomplete_signature(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{terminator}'."
        )
    if not access_key_id or not region or not service:
        raise incomplete_signature(f"Credential has an empty element: '{credential}'")
    if len(date) != 8 or not date.isdigit():
        raise incomplete_signature(f"Credential date must be in the form YYYYMMDD, got '{date}'")
    signed = tuple(name.strip() for name in params["SignedHeaders"].split(";"))
    if any(not name for name in signed):
        raise incomplete_signature(
            f"SignedHeaders has an empty header name: '{params['SignedHeaders']}'"
        )
    return ParsedAuth(
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        signed_headers=signed,
        signature=params["Signature"],
        raw=text,
    )


def authorization_header(
    access_key_id: str, scope: str, signed_headers: Sequence[str], signature: str
) -> str:
    """Format an ``Authorization`` header exactly as botocore does."""
    return (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    )


# --- server side -----------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """An incoming request as the verifier needs it.

    ``path`` and ``query`` are raw, exactly as on the wire (still percent-encoded, no ``?``);
    ``body`` is the whole body (de-chunked).
    """

    method: str
    path: str
    query: str
    headers: HeaderInput
    body: bytes = b""

    @classmethod
    def from_target(
        cls, method: str, target: str, headers: HeaderInput, body: bytes = b""
    ) -> SignedRequest:
        """Build from a request target (``/path?query``) or a full URL."""
        parts = urlsplit(target)
        return cls(method, parts.path or "/", parts.query, headers, body)

    @cached_property
    def header_map(self) -> Headers:
        """The headers as a case-insensitive multi-map."""
        return _as_headers(self.headers)


@dataclass(frozen=True)
class VerifiedCaller:
    """Who signed a request that verified, and with what scope.

    ``security_token`` is the (signed) ``X-Amz-Security-Token``; the caller must check that it
    belongs to the credential identified by ``access_key_id``.
    """

    access_key_id: str
    region: str
    service: str
    signed_at: datetime
    security_token: str | None
    signed_headers: tuple[str, ...]


@dataclass(frozen=True)
class PreparedVerification:
    """A request whose Authorization header, date, scope and signed headers have been checked,
    with the string to sign ready for the final (HMAC or RSA) signature check."""

    auth: ParsedAuth
    timestamp: str
    signed_at: datetime
    string_to_sign: str
    security_token: str | None


def _request_time(request: SignedRequest, auth: ParsedAuth) -> tuple[str, datetime]:
    amz_date = request.header_map.get("x-amz-date")
    if amz_date is not None:
        text = amz_date.strip()
        try:
            if not _TIMESTAMP_SHAPE.fullmatch(text):
                raise ValueError(text)
            moment = datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise incomplete_signature(
                f"Date must be in ISO-8601 'basic format'. Got '{text}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            ) from None
        return text, moment
    http_date = request.header_map.get("date")
    if http_date is None:
        raise incomplete_signature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
            f"header. Authorization={auth.raw}"
        )
    try:
        moment = _utc(parsedate_to_datetime(http_date))
    except (TypeError, ValueError):
        raise incomplete_signature(f"Unparseable Date header: '{http_date}'") from None
    return format_timestamp(moment), moment


def _check_skew(timestamp: str, moment: datetime, now: datetime, max_skew: timedelta) -> None:
    now = _utc(now).replace(microsecond=0)
    minutes = f"{max_skew.total_seconds() / 60:g} min."
    if moment < now - max_skew:
        raise invalid_signature(
            f"Signature expired: {timestamp} is now earlier than "
            f"{format_timestamp(now - max_skew)} ({format_timestamp(now)} - {minutes})"
        )
    if moment > now + max_skew:
        raise invalid_signature(
            f"Signature not yet current: {timestamp} is still later than "
            f"{format_timestamp(now + max_skew)} ({format_timestamp(now)} + {minutes})"
        )


def _payload_hash(
    request: SignedRequest, signed: Sequence[str], allow_unsigned_payload: bool
) -> str:
    body_hash = hashlib.sha256(request.body).hexdigest()
    declared = request.header_map.get("x-amz-content-sha256")
    if declared is None or "x-amz-content-sha256" not in signed:
        return body_hash
    declared = declared.strip()
    if declared == UNSIGNED_PAYLOAD and allow_unsigned_payload:
        return declared
    if not hmac.compare_digest(declared.lower().encode(), body_hash.encode()):
        raise AwsError(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    return declared


def prepare_verification(
    request: SignedRequest,
    *,
    now: datetime,
    expected_service: str | set[str] | frozenset[str] | None = None,
    expected_region: str | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    allow_unsigned_payload: bool = False,
) -> PreparedVerification:
    """Check everything about a signed request except the signature value itself.

    Shared by the HMAC verifier here and the agent's RSA variant; raises :class:`AwsError`
    with the code AWS would answer.
    """
    auth = parse_authorization(request.header_map.get("authorization"))
    timestamp, moment = _request_time(request, auth)
    if auth.date != timestamp[:8]:
        raise invalid_signature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{auth.date}' != '{timestamp[:8]}', from '{timestamp}'."
        )
    if expected_service is not None:
        allowed = {expected_service} if isinstance(expected_service, str) else expected_service
        if auth.service not in allowed:
            wanted = expected_service if isinstance(expected_service, str) else min(allowed)
            raise invalid_signature(f"Credential should be scoped to correct service: '{wanted}'. ")
    if expected_region is not None and auth.region != expected_region:
        raise invalid_signature(
            f"Credential should be scoped to a valid region, not '{auth.region}'. "
        )
    _check_skew(timestamp, moment, now, max_skew)

    signed = tuple(name.lower() for name in auth.signed_headers)
    if "host" not in signed:
        raise incomplete_signature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    token = request.header_map.get("x-amz-security-token")
    if token is not None and "x-amz-security-token" not in signed:
        raise incomplete_signature(
            "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."
        )
    if any(name not in request.header_map for name in signed):
        raise invalid_signature()
    payload = _payload_hash(request, signed, allow_unsigned_payload)
    canonical = canonical_request(
        request.method, request.path, request.query, request.header_map, signed, payload
    )
    return PreparedVerification(
        auth=auth,
        timestamp=timestamp,
        signed_at=moment,
        string_to_sign=string_to_sign(timestamp, auth.scope, canonical),
        security_token=token,
    )


def verify(
    request: SignedRequest,
    lookup_secret: Callable[[str], str | None],
    *,
    now: datetime,
    expected_service: str | set[str] | frozenset[str] | None = None,
    expected_region: str | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    allow_unsigned_payload: bool = False,
) -> VerifiedCaller:
    """Verify an ``AWS4-HMAC-SHA256`` signed request and return who signed it.

    ``lookup_secret`` maps an access key id to its secret (None if unknown). Errors are raised
    as :class:`AwsError` with AWS's codes: MissingAuthenticationTokenException,
    IncompleteSignatureException, UnrecognizedClientException, InvalidSignatureException.
    """
    prepared = prepare_verification(
        request,
        now=now,
        expected_service=expected_service,
        expected_region=expected_region,
        max_skew=max_skew,
        allow_unsigned_payload=allow_unsigned_payload,
    )
    auth = prepared.auth
    secret = lookup_secret(auth.access_key_id)
    if secret is None:
        raise unrecognized_client()
    key = derive_signing_key(secret, auth.date, auth.region, auth.service)
    expected = compute_signature(key, prepared.string_to_sign)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8")):
        raise invalid_signature()
    return VerifiedCaller(
        access_key_id=auth.access_key_id,
        region=auth.region,
        service=auth.service,
        signed_at=prepared.signed_at,
        security_token=prepared.security_token,
        signed_headers=auth.signed_headers,
    )


# --- client side -----------------------------------------------------------------------


def host_from_url(url: str) -> str:
    """The ``Host`` header a client sends for ``url``: lower-case host, port only if not the
    scheme's default, IPv6 literals in brackets, no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return host


@dataclass(frozen=True)
class ClientSigningPlan:
    """What a client signs: the string to sign plus the headers it must add to the request
    (``X-Amz-Date`` and, with temporary credentials, ``X-Amz-Security-Token``)."""

    timestamp: str
    scope: str
    signed_headers: tuple[str, ...]
    string_to_sign: str
    headers_to_add: dict[str, str]


def prepare_client_signature(
    method: str,
    url: str,
    headers: HeaderInput,
    body: bytes,
    *,
    now: datetime,
    region: str,
    service: str,
    session_token: str | None = None,
) -> ClientSigningPlan:
    """Compute the string to sign for an outgoing request, as botocore's SigV4Auth would.

    Every given header is signed except hop-by-hop ones, ``User-Agent`` and ``Authorization``;
    ``host`` comes from the URL unless given; ``X-Amz-Date`` (and the token) replace any given
    values. The payload hash is ``X-Amz-Content-SHA256`` if given, else SHA-256 of ``body``.
    """
    timestamp = format_timestamp(now)
    added = {"X-Amz-Date": timestamp}
    if session_token:
        added["X-Amz-Security-Token"] = session_token
    replaced = {name.lower() for name in added}
    pairs: list[tuple[str, str]] = [
        (name, value)
        for name, value in _pairs(headers)
        if name.lower() not in UNSIGNABLE_HEADERS and name.lower() not in replaced
    ]
    pairs.extend(added.items())
    signing = Headers(pairs)
    if "host" not in signing:
        pairs.append(("host", host_from_url(url)))
        signing = Headers(pairs)
    signed = tuple(sorted(signing.names()))
    declared = signing.get("x-amz-content-sha256")
    payload = declared if declared is not None else hashlib.sha256(body).hexdigest()
    parts = urlsplit(url)
    canonical = canonical_request(method, parts.path, parts.query, signing, signed, payload)
    scope = credential_scope(timestamp[:8], region, service)
    return ClientSigningPlan(
        timestamp=timestamp,
        scope=scope,
        signed_headers=signed,
        string_to_sign=string_to_sign(timestamp, scope, canonical),
        headers_to_add=added,
    )


def _pairs(headers: HeaderInput) -> list[tuple[str, str]]:
    if isinstance(headers, Headers):
        return [(name, value) for name in headers.names() for value in headers.get_all(name)]
    return list(headers.items() if isinstance(headers, Mapping) else headers)


def sign_request(
    method: str,
    url: str,
    headers: HeaderInput,
    body: bytes,
    access_key: str,
    secret: str,
    session_token: str | None,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """Sign an outgoing request with SigV4 and return the headers to add to it.

    The result holds ``X-Amz-Date``, ``Authorization`` and, with a session token,
    ``X-Amz-Security-Token``. The request must then be sent with exactly ``headers`` plus these
    and a ``Host`` equal to :func:`host_from_url` (what HTTP clients send by default).
    """
    plan = prepare_client_signature(
        method,
        url,
        headers,
        body,
        now=now,
        region=region,
        service=service,
        session_token=session_token,
    )
    key = derive_signing_key(secret, plan.timestamp[:8], region, service)
    signature = compute_signature(key, plan.string_to_sign)
    result = dict(plan.headers_to_add)
    result["Authorization"] = authorization_header(
        access_key, plan.scope, plan.signed_headers, signature
    )
    return result
