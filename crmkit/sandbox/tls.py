"""HTTPS for the sandbox on loopback: a certificate authority of its own, kept in the state folder.

Standard clients (msal, azure-identity, requests, httpx) insist on https authorities. The sandbox creates
a CA once per state folder (``tls/ca.pem`` public, ``tls/ca-key.pem`` private, mode 0600) and, at every
start, a server certificate signed by it for 127.0.0.1, ::1, localhost and the sandbox's host names.
A client trusts the sandbox by trusting ``ca.pem`` only (``verify=...``, ``REQUESTS_CA_BUNDLE``,
``SSL_CERT_FILE``); nothing is added to the system's trust store. The private keys are never printed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import GRAPH_HOST, LOGIN_HOST

__all__ = ["SERVER_DNS_NAMES", "SERVER_IPS", "TlsFiles", "ensure_tls"]

SERVER_DNS_NAMES = ("localhost", LOGIN_HOST, GRAPH_HOST)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the sandbox's TLS files: ``ca`` is what clients trust; the two keys are secrets."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    # Written beside the target and renamed, so a reader never sees half a file; keys are 0600 from birth.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crmkit sandbox"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _new_ca(files: TlsFiles, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("crmkit sandbox local CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, _key_pem(key), secret=True)
    _write(files.ca, cert.public_bytes(serialization.Encoding.PEM), secret=False)


def ensure_tls(state_path: str | os.PathLike[str]) -> TlsFiles:
    """The CA (created on first use) and a fresh server certificate signed by it, under ``<state>/tls``."""
    folder = Path(state_path) / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    files = TlsFiles(folder / "ca.pem", folder / "ca-key.pem", folder / "server.pem", folder / "server-key.pem")
    now = dt.datetime.now(dt.UTC)
    if not (files.ca.exists() and files.ca_key.exists()):
        _new_ca(files, now)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"unexpected CA key type in {files.ca_key}")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), secret=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return files
