"""Mutual TLS between sites and HQ: a small private CA, per-site certificates, gRPC credentials.

Layout of a PKI directory (PEM files)::

    ca.pem, ca-key.pem              the mesh CA (self-signed)
    <name>.pem, <name>-key.pem      one per site (and "hq"), signed by the CA

Every leaf certificate is good for both ``serverAuth`` and ``clientAuth`` (RFC 5280 §4.2.1.12), its
subject CN is the site name and its subjectAltName holds ``DNS:<name>``, the extra DNS names and the
IP addresses (RFC 6125: gRPC checks the server against the SAN). Keys are ECDSA P-256.

HQ learns which site is talking from the verified client certificate (:func:`peer_name`), so a
site cannot claim another site's name. The CLI hooks :func:`certs_command` as ``ccgw certs``::

    ccgw certs --dir pki --ca --site hq:127.0.0.1 --site shanghai:127.0.0.2,127.0.0.3
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "AuthContext",
    "CertError",
    "certs_command",
    "channel_credentials",
    "issue",
    "main",
    "make_ca",
    "missing",
    "peer_name",
    "server_credentials",
    "sip_contexts",
]

logger = logging.getLogger(__name__)

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca-key.pem"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LEAF_DAYS: Final = 825
"""Leaf validity (days): the CA/Browser Forum ceiling, plenty for a private mesh."""


class CertError(ValueError):
    """A bad name, address or missing CA."""


class AuthContext(Protocol):
    """The part of ``grpc.aio.ServicerContext`` :func:`peer_name` needs."""

    def auth_context(self) -> Any: ...


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise CertError(f"certificate name {name!r} must be 1-63 of [A-Za-z0-9._-]")


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(pki_dir: Path, *, days: int = 3650) -> None:
    """Create the mesh CA (``ca.pem``, ``ca-key.pem``) in ``pki_dir``; an existing CA is kept."""
    pki_dir = Path(pki_dir)
    pki_dir.mkdir(parents=True, exist_ok=True)
    if (pki_dir / CA_CERT).exists() and (pki_dir / CA_KEY).exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ccgw"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ccgw mesh CA"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        # RFC 5280 §4.2.1.9 / §4.2.1.3: a CA that signs leaves only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(pki_dir / CA_KEY, _key_pem(key), private=True)
    _write(pki_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    logger.info("created mesh CA in %s", pki_dir)


def _load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((pki_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((pki_dir / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"no CA in {pki_dir} (run with --ca first)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{pki_dir / CA_KEY} is not an EC key")
    return cert, key


def issue(
    pki_dir: Path,
    name: str,
    *,
    ips: Sequence[str] = ("127.0.0.1",),
    dns: Sequence[str] = (),
) -> None:
    """Issue (or re-issue) ``<name>.pem`` / ``<name>-key.pem`` signed by the CA in ``pki_dir``.

    The certificate's CN is ``name``; its SAN holds ``DNS:name``, ``dns`` and the ``ips``.
    """
    pki_dir = Path(pki_dir)
    _check_name(name)
    try:
        addrs = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise CertError(f"bad IP address for {name!r}: {exc}") from exc
    ca_cert, ca_key = _load_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([name, *dns])]
    alt += [x509.IPAddress(a) for a in addrs]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ccgw"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=_LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # RFC 5280 §4.2.1.12: one certificate serves a site as gRPC server and as client.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki_dir / f"{name}-key.pem", _key_pem(key), private=True)
    _write(pki_dir / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    logger.info("issued certificate %r (ips=%s dns=%s) in %s", name, list(ips), list(dns), pki_dir)


def _leaf(pki_dir: Path, name: str) -> tuple[bytes, bytes, bytes]:
    pki_dir = Path(pki_dir)
    _check_name(name)
    try:
        return (
            (pki_dir / CA_CERT).read_bytes(),
            (pki_dir / f"{name}-key.pem").read_bytes(),
            (pki_dir / f"{name}.pem").read_bytes(),
        )
    except FileNotFoundError as exc:
        raise CertError(f"missing PKI file {exc.filename}") from exc


def server_credentials(pki_dir: Path, name: str) -> grpc.ServerCredentials:
    """Server credentials for ``name`` that require a client certificate signed by the CA."""
    ca, key, cert = _leaf(pki_dir, name)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(pki_dir: Path, name: str) -> grpc.ChannelCredentials:
    """Channel credentials presenting ``name``'s certificate and trusting only the mesh CA."""
    ca, key, cert = _leaf(pki_dir, name)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def missing(pki_dir: Path, name: str, host: str) -> str | None:
    """What is missing from ``pki_dir`` for site ``name``, with the command that makes it."""
    pki = Path(pki_dir)
    for file in (CA_CERT, f"{name}.pem", f"{name}-key.pem"):
        if not (pki / file).is_file():
            return (
                f"{pki / file} is missing; make the certificates with: "
                f"ccgw certs --dir {pki} --ca --site {name}:{host}"
            )
    return None


def sip_contexts(pki_dir: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    """SIP over TLS between sites: ``(server, client_named, client_any)`` contexts.

    Every side presents ``name``'s certificate and trusts only the mesh CA; the server requires a
    client certificate (mutual TLS). ``client_named`` checks the far end's certificate against
    the site name it is meant to be (an inter-site trunk); ``client_any`` only checks that it is
    signed by the mesh CA (a request to a Contact address, inside a dialog already set up).
    """
    pki_dir = Path(pki_dir)
    _leaf(pki_dir, name)  # a clear CertError when a file is missing
    ca = str(pki_dir / CA_CERT)
    chain = (str(pki_dir / f"{name}.pem"), str(pki_dir / f"{name}-key.pem"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    server.verify_mode = ssl.CERT_REQUIRED
    named = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    anyone = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    anyone.check_hostname = False  # still CERT_REQUIRED: the chain must lead to the mesh CA
    for ctx in (server, named, anyone):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(*chain)
    return server, named, anyone


def _first(values: Any) -> str | None:
    if not values:
        return None
    v = values[0]
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def peer_name(context: AuthContext) -> str | None:
    """The authenticated client's name (certificate CN, else first SAN), or ``None`` without TLS.

    gRPC only fills the x509 properties after it has verified the chain against the CA, so the
    name can be trusted.
    """
    try:
        auth = context.auth_context()
    except Exception:  # an insecure or closed context has none
        return None
    if not auth:
        return None
    return _first(auth.get("x509_common_name")) or _first(auth.get("x509_subject_alternative_name"))


def _site_arg(text: str) -> tuple[str, list[str]]:
    name, _, ips = text.partition(":")
    addrs = [ip.strip() for ip in ips.split(",") if ip.strip()] or ["127.0.0.1"]
    return name, addrs


def certs_command(args: Sequence[str]) -> int:
    """``ccgw certs --dir DIR [--ca] [--days N] [--site NAME[:ip,...]]... [--dns NAME]...``.

    ``--ca`` creates the CA when it is missing; each ``--site`` issues a certificate for that name
    with the given IP addresses (default 127.0.0.1). Returns the process exit status.
    """
    p = argparse.ArgumentParser(
        prog="ccgw certs", description="Make a test CA and per-site certificates for mutual TLS."
    )
    p.add_argument("--dir", required=True, type=Path, help="PKI directory (created if needed)")
    p.add_argument("--ca", action="store_true", help="create the CA if it does not exist")
    p.add_argument("--days", type=int, default=3650, help="CA validity in days (default 3650)")
    p.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="NAME[:IP,...]",
        help="issue a certificate for NAME with these IP SANs (repeatable)",
    )
    p.add_argument(
        "--dns", action="append", default=[], help="extra DNS SAN for every --site (repeatable)"
    )
    ns = p.parse_args(list(args))
    if not ns.ca and not ns.site:
        p.error("nothing to do: give --ca and/or --site")
    try:
        if ns.ca:
            make_ca(ns.dir, days=ns.days)
            print(f"CA: {ns.dir / CA_CERT}")
        for spec in ns.site:
            name, ips = _site_arg(spec)
            issue(ns.dir, name, ips=ips, dns=ns.dns)
            print(f"{name}: {ns.dir / (name + '.pem')} ({', '.join(ips)})")
    except CertError as exc:
        print(f"ccgw certs: {exc}")
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m gateway.mesh.tls``."""
    return certs_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
