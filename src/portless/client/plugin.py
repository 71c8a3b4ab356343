"""`session-manager-plugin`: the argv contract the AWS CLI launches the plugin with.

Client spec §2.2/§2.3:

    session-manager-plugin                       → "installed successfully" note
    session-manager-plugin --version             → our version (> 1.2.497.0, so the AWS
                                                   CLI passes the response in the env var)
    session-manager-plugin RESPONSE REGION StartSession [PROFILE [PARAMS [ENDPOINT]]]

RESPONSE is the StartSession response JSON, or the name AWS_SSM_START_SESSION_RESPONSE
of the environment variable holding it (read, then unset).  PARAMS is the StartSession
request JSON (its `Target` is the session's target); ENDPOINT is where ResumeSession and
TerminateSession go (no scheme ⇒ https://).  Exit status 0 on every normal path, like
the plugin (the AWS CLI turns any other status into 255).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from portless.protocol.versions import PORTLESS_CLIENT_VERSION

ENV_RESPONSE = "AWS_SSM_START_SESSION_RESPONSE"

INSTALLED_TEXT = ("\nThe Session Manager plugin was installed successfully. "
                  "Use the AWS CLI to start a session.\n\n")


class PluginArgError(Exception):
    pass


@dataclass(slots=True)
class PluginArgs:
    session_id: str
    token: str
    stream_url: str
    region: str
    operation: str
    profile: str
    target: str
    endpoint_url: str | None
    legacy: bool = False
    """Four-argument form of old AWS CLIs (no profile, parameters or endpoint)."""


def _lookup(obj: dict[str, Any], name: str) -> Any:
    """Case-insensitive key match, as the plugin's Go decoder does."""
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if key.lower() == name.lower():
            return value
    return None


def parse_argv(argv: list[str], environ: dict[str, str] | os._Environ[str] | None = None,
               ) -> PluginArgs:
    """Parse argv[1:] of a session launch; reads and unsets the response env var."""
    from portless.client.config import plugin_endpoint_url

    env = os.environ if environ is None else environ
    if len(argv) < 4:
        raise PluginArgError("too few arguments")
    raw = argv[1]
    if raw.startswith(ENV_RESPONSE):
        value = env.get(ENV_RESPONSE)
        if value is None:
            raise PluginArgError(f"environment variable {ENV_RESPONSE} is not set")
        # The plugin unsets it so that nothing it starts inherits the token.
        env.pop(ENV_RESPONSE, None)
        raw = value
    try:
        response = json.loads(raw)
    except ValueError as exc:
        raise PluginArgError(f"start session response is not JSON: {exc}") from None
    if not isinstance(response, dict):
        raise PluginArgError("start session response is not a JSON object")
    fields = {}
    for name in ("SessionId", "TokenValue", "StreamUrl"):
        value = _lookup(response, name)
        if not isinstance(value, str):
            raise PluginArgError(f"start session response has no {name}")
        fields[name] = value
    legacy = len(argv) == 4
    target = ""
    profile = ""
    endpoint = None
    if not legacy:
        profile = argv[4]
        if len(argv) > 5:
            try:
                request = json.loads(argv[5])
            except ValueError as exc:
                raise PluginArgError(f"start session parameters are not JSON: {exc}") from None
            value = _lookup(request, "Target") if isinstance(request, dict) else None
            if not isinstance(value, str):
                raise PluginArgError("start session parameters have no string Target")
            target = value
        if len(argv) > 6:
            endpoint = plugin_endpoint_url(argv[6])
    return PluginArgs(
        session_id=fields["SessionId"], token=fields["TokenValue"],
        stream_url=fields["StreamUrl"], region=argv[2], operation=argv[3],
        profile=profile, target=target, endpoint_url=endpoint, legacy=legacy)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)
    if len(args) <= 1:
        _out(INSTALLED_TEXT)
        return 0
    if len(args) == 2 and args[1] == "--version":
        _out(PORTLESS_CLIENT_VERSION + "\n")
        return 0
    if len(args) < 4:
        _out(f"\nUnknown operation {args[1]}. \nUse session-manager-plugin --version "
             "to check the version.\n\n")
        return 0
    try:
        parsed = parse_argv(args)
    except PluginArgError as exc:
        sys.stderr.write(f"session-manager-plugin: {exc}\n")
        return 1
    if parsed.operation != "StartSession":
        _out("Invalid Operation\n")
        return 0
    return run(parsed)


def run(parsed: PluginArgs) -> int:
    from portless.client.api import BotoSessionApi, kms_data_key_provider
    from portless.client.config import ClientOptions, ConfigError, Resolved
    from portless.client.session import SessionInfo, run_mode

    try:
        resolved = Resolved(ClientOptions(endpoint_url=parsed.endpoint_url,
                                          profile=parsed.profile or None,
                                          region=parsed.region or None))
        ssl = resolved.ssl_context()
    except ConfigError as exc:
        _out(f"Cannot perform start session: {exc}\n")
        return 0
    info = SessionInfo(session_id=parsed.session_id, token=parsed.token,
                       stream_url=parsed.stream_url, target=parsed.target)
    kms = kms_data_key_provider(resolved.kms, info.session_id, info.target,
                                legacy=parsed.legacy)
    try:
        return run_mode(info, BotoSessionApi(resolved.ssm), ssl, "plugin",
                        data_key_provider=kms)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
