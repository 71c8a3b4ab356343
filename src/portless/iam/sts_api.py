"""The STS endpoint: GetCallerIdentity and GetSessionToken over AWS's query protocol.

GetSessionToken turns a user's long-term key into temporary credentials (``ASIA…`` id,
secret, session token, expiry), optionally proving MFA with the user's enabled virtual
device (``SerialNumber`` + ``TokenCode``; RFC 6238, 30-second steps, 6 digits, one step of
drift either way, each code accepted once). The credentials are stored with the MFA time,
which is what ``aws:MultiFactorAuthPresent`` and ``aws:MultiFactorAuthAge`` are computed
from on every later call.

Neither operation needs a permission (as at AWS); both are still recorded by the
authorizer's audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from portless.aws.errors import AwsError
from portless.iam.authorizer import AuthorizeFn
from portless.iam.principal import Principal, account_of
from portless.iam.query import serve_query
from portless.iam.service import IamService
from portless.store import Store

__all__ = [
    "DEFAULT_SESSION_DURATION",
    "MFA_FAILED_MESSAGE",
    "handle_sts",
]

log = logging.getLogger(__name__)

DEFAULT_SESSION_DURATION = 43_200
MFA_FAILED_MESSAGE = "MultiFactorAuthentication failed with invalid MFA one time pass code."


def _access_denied(message: str) -> AwsError:
    return AwsError("AccessDenied", message, 403)


async def _get_caller_identity(
    store: Store,
    caller: Principal,
    args: Mapping[str, Any],
    account_id: str,
    authorize: AuthorizeFn,
) -> dict[str, Any]:
    await authorize("sts:GetCallerIdentity", caller.arn, no_permission_required=True)
    return {
        "UserId": caller.user_id or caller.name,
        "Account": account_id,
        "Arn": caller.arn,
    }


async def _get_session_token(
    store: Store,
    caller: Principal,
    args: Mapping[str, Any],
    account_id: str,
    authorize: AuthorizeFn,
) -> dict[str, Any]:
    action = "sts:GetSessionToken"
    if caller.kind != "user":
        raise _access_denied("GetSessionToken can only be called with a user's access key.")
    if caller.access_key_id.startswith("ASIA"):
        raise _access_denied("Cannot call GetSessionToken with session credentials")
    duration = int(args.get("DurationSeconds") or DEFAULT_SESSION_DURATION)
    serial = args.get("SerialNumber") or None
    code = args.get("TokenCode") or None
    service = IamService(store, account_id)
    authenticated_at: float | None = None
    if serial is not None or code is not None:
        if serial is None or code is None:
            raise _access_denied(
                "MultiFactorAuthentication failed, must provide both MFA serial number "
                "and one time pass code."
            )
        authenticated_at = await service.check_mfa_code(caller.name, serial, code)
        if authenticated_at is None:
            await authorize.record(action, caller.arn, False, f"MFA code refused ({serial})")
            raise _access_denied(MFA_FAILED_MESSAGE)
    await authorize(action, caller.arn, no_permission_required=True)
    cred = await store.issue_session_credential(
        caller.name,
        ttl=float(duration),
        mfa_serial=serial if authenticated_at is not None else None,
        mfa_authenticated_at=authenticated_at,
    )
    return {
        "Credentials": {
            "AccessKeyId": cred.access_key_id,
            "SecretAccessKey": cred.secret_access_key,
            "SessionToken": cred.session_token,
            "Expiration": cred.expiration,
        }
    }


_OPERATIONS = {
    "GetCallerIdentity": _get_caller_identity,
    "GetSessionToken": _get_session_token,
}


async def handle_sts(
    store: Store,
    caller: Principal,
    params: Mapping[str, str],
    request_id: str,
    *,
    authorize: AuthorizeFn,
    account_id: str | None = None,
) -> tuple[int, bytes]:
    """Serve one STS query-protocol request: ``(HTTP status, XML body)``.

    Same contract as :func:`portless.iam.query_api.handle_iam` (SigV4 service ``sts``).
    """


    async def run(action: str, args: dict[str, Any]) -> dict[str, Any]:
        account = account_id or account_of(caller.arn)
        return await _OPERATIONS[action](store, caller, args, account, authorize)

    return await serve_query("sts", params, request_id, _OPERATIONS, run, log)
