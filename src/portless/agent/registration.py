"""`portless agent register`: activation id + code → managed instance id (agent spec §3).

A fresh 2048-bit RSA key pair is generated at every registration; the public key goes to
RegisterManagedInstance (anonymous) as base64 SPKI DER with the machine fingerprint. The
private key is written first with an empty instance id (to prove the state directory is
writable), then the full record once the server answered.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from portless.agent.api import AgentApi, http_session, ssl_context
from portless.agent.state import Registration, StateDir
from portless.aws.rsa_signature import generate_instance_key, private_key_b64, public_key_b64

log = logging.getLogger(__name__)


class AlreadyRegistered(Exception):
    """A registration exists and --force was not given."""


async def register(state: StateDir, *, endpoint: str, activation_id: str, activation_code: str,
                   region: str, ca_file: str | None = None, force: bool = False) -> Registration:
    """Register this machine; returns the stored registration. Raises AwsError/NetworkError."""
    state.ensure()
    existing = state.load_registration()
    if existing is not None and not force:
        raise AlreadyRegistered(
            f"already registered as {existing.instance_id} with {existing.endpoint}; "
            "use --force to register again")
    key = generate_instance_key()
    fingerprint = state.fingerprint()
    pending = Registration(
        endpoint=endpoint, region=region, instance_id="", private_key=private_key_b64(key),
        private_key_created=datetime.now(UTC).isoformat(), fingerprint=fingerprint,
        ca_file=ca_file)
    state.save_registration(pending)
    try:
        ctx = ssl_context(ca_file) if endpoint.lower().startswith("https") else None
        async with http_session() as http:
            api = AgentApi(http, endpoint, region, ssl_ctx=ctx)
            instance_id = await api.register_managed_instance(
                activation_id, activation_code, fingerprint, public_key_b64(key))
    except BaseException:
        # Leave the previous registration in place when the new one fails.
        if existing is not None:
            state.save_registration(existing)
        else:
            state.clear_registration()
        raise
    pending.instance_id = instance_id
    state.save_registration(pending)
    log.info("Successfully registered the instance with portless using Managed instance-id: %s",
             instance_id)
    return pending
