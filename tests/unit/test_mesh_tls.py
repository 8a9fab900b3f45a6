"""The mesh PKI: CA, per-site certificates, gRPC credentials, peer name, the ``certs`` command."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.mesh import tls


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_make_ca_creates_a_ca_and_is_idempotent(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    tls.make_ca(pki)
    ca_pem = (pki / "ca.pem").read_bytes()
    key_pem = (pki / "ca-key.pem").read_bytes()
    tls.make_ca(pki)
    assert (pki / "ca.pem").read_bytes() == ca_pem
    assert (pki / "ca-key.pem").read_bytes() == key_pem
    ca = _cert(pki / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (pki / "ca-key.pem").stat().st_mode & 0o077 == 0


def test_issue_signs_a_dual_use_certificate_with_sans(tmp_path: Path) -> None:
    tls.make_ca(tmp_path)
    tls.issue(tmp_path, "shanghai", ips=("127.0.0.2", "::1"), dns=("sh.example",))
    cert = _cert(tmp_path / "shanghai.pem")
    ca = _cert(tmp_path / "ca.pem")
    cert.verify_directly_issued_by(ca)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "shanghai"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["shanghai", "sh.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.2"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_issue_without_a_ca_or_with_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(tls.CertError, match="no CA"):
        tls.issue(tmp_path, "hq")
    tls.make_ca(tmp_path)
    with pytest.raises(tls.CertError, match="certificate name"):
        tls.issue(tmp_path, "../evil")
    with pytest.raises(tls.CertError, match="bad IP"):
        tls.issue(tmp_path, "hq", ips=("300.1.1.1",))


def test_credentials_load(tmp_path: Path) -> None:
    tls.make_ca(tmp_path)
    tls.issue(tmp_path, "hq")
    assert isinstance(tls.server_credentials(tmp_path, "hq"), grpc.ServerCredentials)
    assert isinstance(tls.channel_credentials(tmp_path, "hq"), grpc.ChannelCredentials)
    with pytest.raises(tls.CertError, match="missing"):
        tls.channel_credentials(tmp_path, "nobody")


class _Ctx:
    def __init__(self, auth: dict[str, list[bytes]] | None) -> None:
        self._auth = auth

    def auth_context(self) -> Any:
        if self._auth is None:
            raise RuntimeError("no auth context")
        return self._auth


def test_peer_name_prefers_cn_then_san() -> None:
    assert tls.peer_name(_Ctx({"x509_common_name": [b"shanghai"]})) == "shanghai"
    assert tls.peer_name(_Ctx({"x509_subject_alternative_name": [b"gz"]})) == "gz"
    assert tls.peer_name(_Ctx({"transport_security_type": [b"insecure"]})) is None
    assert tls.peer_name(_Ctx({})) is None
    assert tls.peer_name(_Ctx(None)) is None


def test_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = tmp_path / "pki"
    rc = tls.certs_command(
        ["--dir", str(pki), "--ca", "--site", "hq", "--site", "gz:127.0.0.3,127.0.0.4"]
    )
    assert rc == 0
    assert {p.name for p in pki.iterdir()} == {
        "ca.pem",
        "ca-key.pem",
        "hq.pem",
        "hq-key.pem",
        "gz.pem",
        "gz-key.pem",
    }
    san = _cert(pki / "gz.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.3",
        "127.0.0.4",
    ]
    assert "gz" in capsys.readouterr().out
    assert tls.certs_command(["--dir", str(tmp_path / "empty"), "--site", "x"]) == 2
    with pytest.raises(SystemExit):
        tls.certs_command(["--dir", str(pki)])
