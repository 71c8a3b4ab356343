"""Where the SSM API is and who we are: resolved through botocore, as the AWS CLI does.

Endpoint: `--endpoint-url`, else botocore's configured-endpoint support
(`AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url` or its
`services` section), else the default `https://ssm.<region>.amazonaws.com`.
Credentials and region: `--profile`/`--region`, else the standard chain (environment,
shared credentials/config files, …).  TLS: `--no-verify-ssl`, `--ca-bundle`, else
`AWS_CA_BUNDLE` / the profile's `ca_bundle`, else the default trust store; the data
channel WebSocket is verified with the same bundle.
"""

from __future__ import annotations

import importlib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

USER_AGENT_EXTRA = "portless/0.1.0"

BotoClient = Any
"""A botocore client (botocore ships no type information)."""


def botocore(module: str) -> Any:
    """Import a botocore submodule lazily (it is slow to import and untyped)."""
    return importlib.import_module(f"botocore.{module}")


class ConfigError(Exception):
    """A configuration problem to report as one line (no traceback)."""


@dataclass(slots=True)
class ClientOptions:
    """The global options every verb accepts (the AWS CLI's names)."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    verify_ssl: bool = True


def check_endpoint_url(value: str) -> str:
    """The AWS CLI refuses an --endpoint-url without a scheme; so do we (also `host:port`)."""
    if not urlparse(value).scheme or "://" not in value:
        raise ConfigError(
            f'Bad value for --endpoint-url "{value}": scheme is missing.  '
            "Must be of the form http://<hostname>/ or https://<hostname>/")
    return value


def plugin_endpoint_url(value: str) -> str | None:
    """argv[6] of the plugin contract: empty means default, no scheme gets https://."""
    value = value.strip()
    if not value:
        return None
    if "://" not in value:
        return "https://" + value
    return value


def make_session(profile: str | None) -> Any:
    session = botocore("session").Session(profile=profile or None)
    session.user_agent_extra = USER_AGENT_EXTRA
    if profile:
        try:
            session.get_scoped_config()
        except botocore("exceptions").ProfileNotFound as exc:
            raise ConfigError(str(exc)) from None
    return session


class Resolved:
    """A botocore session plus the options, producing `ssm` clients and TLS contexts."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        if options.endpoint_url:
            check_endpoint_url(options.endpoint_url)
        self.session = make_session(options.profile)
        self._client: BotoClient | None = None

    @property
    def verify(self) -> bool | str | None:
        """The `verify` argument for botocore (None = botocore decides: AWS_CA_BUNDLE…)."""
        if not self.options.verify_ssl:
            return False
        return self.options.ca_bundle or None

    def ca_bundle(self) -> str | None:
        """The CA bundle path botocore would use, if one is configured."""
        if self.options.ca_bundle:
            return self.options.ca_bundle
        value = self.session.get_config_variable("ca_bundle")
        return str(value) if value else None

    def region(self) -> str:
        region = self.options.region or self.session.get_config_variable("region")
        if not region:
            raise ConfigError(
                'You must specify a region. You can also configure your region by '
                'running "aws configure".')
        return str(region)

    def ssm(self) -> BotoClient:
        """The `ssm` client (created once)."""
        if self._client is None:
            self._client = self._create_client()
        return self._client

    def _create_client(self) -> BotoClient:
        region = self.region()
        cfg = botocore("config").Config(user_agent_extra=USER_AGENT_EXTRA)
        try:
            return self.session.create_client(
                "ssm", region_name=region, endpoint_url=self.options.endpoint_url or None,
                verify=self.verify, config=cfg)
        except botocore("exceptions").BotoCoreError as exc:
            raise ConfigError(str(exc)) from None

    def kms(self) -> BotoClient:
        """A `kms` client for the same profile, region and TLS settings."""
        return self.session.create_client("kms", region_name=self.region(), verify=self.verify)

    @property
    def endpoint_url(self) -> str:
        return str(self.ssm().meta.endpoint_url)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for the data-channel WebSocket (aiohttp's `ssl=` argument)."""
        return websocket_ssl(self.options.verify_ssl, self.ca_bundle())


def websocket_ssl(verify: bool, ca_bundle: str | None) -> ssl.SSLContext | bool:
    if not verify:
        return False
    if ca_bundle:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Cannot load CA bundle {ca_bundle}: {exc}") from None
    return True


def describe_error(exc: BaseException) -> str:
    """One line for an exception raised while talking to the API (no traceback)."""
    errors = botocore("exceptions")
    if isinstance(exc, errors.ClientError):
        err: dict[str, Any] = exc.response.get("Error", {})
        code = err.get("Code") or "Error"
        message = err.get("Message") or str(exc)
        return f"{code}: {message}"
    if isinstance(exc, errors.NoCredentialsError):
        return ("Unable to locate credentials. You can configure credentials by running "
                '"aws configure".')
    return str(exc) or type(exc).__name__


def api_errors() -> tuple[type[BaseException], ...]:
    """Exceptions an API call can raise that deserve a one-line message."""
    errors = botocore("exceptions")
    return (errors.BotoCoreError, errors.ClientError, ConfigError)
