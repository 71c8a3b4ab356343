"""Endpoint, region, credentials and TLS resolution, as the AWS CLI resolves them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from portless.client.config import (
    ClientOptions,
    ConfigError,
    Resolved,
    check_endpoint_url,
    plugin_endpoint_url,
)


def resolved(**kw: object) -> Resolved:
    return Resolved(ClientOptions(**kw))  # type: ignore[arg-type]


def test_default_endpoint_from_region(aws_env: Path) -> None:
    r = resolved(region="eu-west-1")
    assert r.endpoint_url == "https://ssm.eu-west-1.amazonaws.com"


def test_env_endpoint_ssm(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general.example:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:8080")
    assert resolved(region="us-east-1").endpoint_url == "http://127.0.0.1:8080"


def test_env_endpoint_general(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general.example:1")
    assert resolved(region="us-east-1").endpoint_url == "http://general.example:1"


def test_flag_beats_env(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:8080")
    r = resolved(region="us-east-1", endpoint_url="https://portless.example:8443")
    assert r.endpoint_url == "https://portless.example:8443"


def test_profile_endpoint_region_and_keys(aws_env: Path) -> None:
    (aws_env / "config").write_text(
        "[profile portless]\nregion = ap-south-1\nendpoint_url = http://10.0.0.5:8080\n"
        "[profile other]\nregion = us-west-2\n"
        "services = custom\n[services custom]\nssm =\n  endpoint_url = http://ssm.other:9\n")
    (aws_env / "credentials").write_text(
        "[portless]\naws_access_key_id = AKIDPORTLESS\naws_secret_access_key = s3cret\n")
    r = resolved(profile="portless")
    assert r.region() == "ap-south-1"
    assert r.endpoint_url == "http://10.0.0.5:8080"
    creds = r.session.get_credentials()
    assert creds.access_key == "AKIDPORTLESS"
    other = resolved(profile="other")
    assert other.endpoint_url == "http://ssm.other:9"
    assert other.region() == "us-west-2"


def test_profile_from_env(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (aws_env / "config").write_text("[profile p]\nregion = eu-north-1\n")
    monkeypatch.setenv("AWS_PROFILE", "p")
    assert resolved().region() == "eu-north-1"


def test_region_flag_beats_env(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    assert resolved().region() == "us-east-2"
    assert resolved(region="sa-east-1").region() == "sa-east-1"


def test_env_credentials(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    assert resolved(region="us-east-1").session.get_credentials().access_key == "AKIDENV"


def test_missing_region(aws_env: Path) -> None:
    with pytest.raises(ConfigError, match="region"):
        resolved().ssm()


def test_unknown_profile(aws_env: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        resolved(profile="nope")


def test_endpoint_without_scheme() -> None:
    with pytest.raises(ConfigError, match="scheme"):
        check_endpoint_url("localhost:8080")


def test_plugin_endpoint() -> None:
    assert plugin_endpoint_url("") is None
    assert plugin_endpoint_url("ssm.example.com") == "https://ssm.example.com"
    assert plugin_endpoint_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


def _make_ca(path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portless test CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_ca_bundle(aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = aws_env / "ca.pem"
    _make_ca(ca)
    assert resolved(region="us-east-1").ca_bundle() is None
    assert resolved(region="us-east-1").ssl_context() is True
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
    r = resolved(region="us-east-1")
    assert r.ca_bundle() == str(ca)
    ctx = r.ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert r.verify is None  # botocore picks AWS_CA_BUNDLE itself
    flag = resolved(region="us-east-1", ca_bundle=str(ca))
    assert flag.verify == str(ca)
    off = resolved(region="us-east-1", verify_ssl=False)
    assert off.verify is False and off.ssl_context() is False
    with pytest.raises(ConfigError):
        resolved(region="us-east-1", ca_bundle=str(aws_env / "missing.pem")).ssl_context()
