"""The admission webhook's serving certificate: from a directory (a mounted Secret), or made here.

`respool run --webhook-cert-dir DIR` uses ``DIR/tls.crt`` and ``DIR/tls.key`` (the keys of a
``kubernetes.io/tls`` Secret; ``DIR/ca.crt``, when present, is the CA bundle the API server is
given, else the certificate itself). Without them the operator makes its own: a CA and a
serving certificate signed by it, valid for a year, for the webhook's host names and
addresses, written into DIR (a fresh temporary directory by default). Either way kopf's
`WebhookServer` reads the files and re-reads them when they change, and its managed
`MutatingWebhookConfiguration` carries the current CA bundle (`caBundle`).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class CertFiles:
    certfile: Path
    keyfile: Path
    cafile: Path
    generated: bool


def ensure_certificates(directory: Path, names: Iterable[str]) -> CertFiles:
    """The files in ``directory``, made there first when ``tls.crt``/``tls.key`` are absent."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if cert.is_file() and key.is_file():
        return CertFiles(cert, key, ca if ca.is_file() else cert, generated=False)
    ca_pem, cert_pem, key_pem = make_certificates(sorted(set(names)))
    key.touch(mode=0o600)
    key.write_bytes(key_pem)
    cert.write_bytes(cert_pem)
    ca.write_bytes(ca_pem)
    return CertFiles(cert, key, ca, generated=True)


def make_certificates(names: list[str]) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, serving certificate, serving key), PEM; the serving certificate is
    valid for every name (DNS names and IP addresses alike)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not names:
        raise ValueError("the webhook certificate needs at least one host name or address")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "respool webhook CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca_cert.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )
