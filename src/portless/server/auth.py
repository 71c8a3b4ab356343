"""Who is calling: SigV4 verification of API, MGS and WebSocket requests.

The work is done by :mod:`portless.iam.principal`, which reads the key from the
store on every request (so a key deactivated or deleted is refused on the very
next call) and carries the MFA facts of temporary credentials.
"""

from __future__ import annotations

from aiohttp import web

from portless.aws.sigv4 import SignedRequest
from portless.iam.principal import Caller, authenticate
from portless.store import Store

__all__ = ["ANONYMOUS", "Authenticator", "Caller", "signed_request"]

ANONYMOUS = Caller("anonymous", "anonymous", "anonymous")


def signed_request(request: web.Request, body: bytes) -> SignedRequest:
    return SignedRequest.from_target(request.method, request.raw_path, request.headers, body)


class Authenticator:
    """Verifies SigV4 signatures against the store's keys (users' and issued ones)."""

    def __init__(self, store: Store, region: str, account_id: str) -> None:
        self.store = store
        self.region = region
        self.account_id = account_id

    async def authenticate(self, request: SignedRequest, services: frozenset[str]) -> Caller:
        """Verify `request` (signed for one of `services`) and return the caller.

        Raises AwsError with AWS's codes (MissingAuthenticationTokenException,
        IncompleteSignatureException, InvalidSignatureException,
        UnrecognizedClientException, ExpiredTokenException).
        """
        return await authenticate(self.store, request, services=services, region=self.region,
                                  account_id=self.account_id)
