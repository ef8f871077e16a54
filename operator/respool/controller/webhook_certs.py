"""The admission webhook's serving certificate: from a directory (a mounted Secret), or made here.

`respool run --webhook-cert-dir DIR` uses ``DIR/tls.crt`` and ``DIR/tls.key`` (the keys of a
``kubernetes.io/tls`` Secret; ``DIR/ca.crt``, when present, is the CA bundle the API server is
given, else the certificate itself). Without them the operator makes its own: a CA and a
serving certificate signed by it (ECDSA P-256, SHA-256), valid from five minutes ago (clock skew
between the operator and the API server) for a year, for the webhook's host names and
addresses, written into DIR (a fresh temporary directory by default). Either way kopf's
`WebhookServer` reads the files and re-reads them when they change, and its managed
`MutatingWebhookConfiguration` carries the current CA bundle (`caBundle`).

The certificates are made by the ``openssl`` command (OpenSSL >= 1.1.1), not a Python library:
the OpenSSL that Python's own ``ssl`` module links is already in every image this runs in (Debian's
``ca-certificates`` depends on its ``openssl`` command), while the ``cryptography`` wheel would add
16 MB to an image whose target is 150 MB, for one certificate made at start-up. ``openssl ca``
is used (not ``openssl x509 -req``) because only it sets the start of the validity window
(``-startdate``) before OpenSSL 3.4.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

VALIDITY = datetime.timedelta(days=365)
#: The certificates are valid from this long before they are made (clocks differ a little).
BACKDATE = datetime.timedelta(minutes=5)
CA_NAME = "respool webhook CA"
#: The serving certificate's subject; clients check its subjectAltName (the names), never this.
SERVING_NAME = "respool webhook"


NO_OPENSSL = (
    "making the webhook's certificate needs the openssl command (Debian and Ubuntu: the openssl "
    "package); or give respool a certificate: --webhook-cert-dir DIR holding tls.crt, tls.key "
    "and ca.crt")


class CertificateError(RuntimeError):
    """The certificate could not be made (no ``openssl`` command, or it failed)."""


@dataclass(frozen=True)
class CertFiles:
    certfile: Path
    keyfile: Path
    cafile: Path
    generated: bool


def provided(directory: Path | None) -> bool:
    """Whether ``directory`` holds a certificate and key to use as they are."""
    return (directory is not None and (directory / "tls.crt").is_file()
            and (directory / "tls.key").is_file())


def check_can_make(directory: Path | None) -> None:
    """Raises `CertificateError` when no certificate is provided and none can be made here:
    `respool run` says so before it starts, instead of failing in its start-up handler."""
    if not provided(directory) and shutil.which("openssl") is None:
        raise CertificateError(NO_OPENSSL)


def ensure_certificates(directory: Path, names: Iterable[str]) -> CertFiles:
    """The files in ``directory``, made there first when ``tls.crt``/``tls.key`` are absent."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if provided(directory):
        return CertFiles(cert, key, ca if ca.is_file() else cert, generated=False)
    ca_pem, cert_pem, key_pem = make_certificates(sorted(set(names)))
    key.touch(mode=0o600)
    key.write_bytes(key_pem)
    cert.write_bytes(cert_pem)
    ca.write_bytes(ca_pem)
    return CertFiles(cert, key, ca, generated=True)


def make_certificates(names: list[str], *,
                      now: datetime.datetime | None = None) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, serving certificate, serving key), PEM; the serving certificate is
    valid for every name (DNS names and IP addresses alike). The CA's key is never written
    anywhere but a private temporary directory, removed before this returns."""
    if not names:
        raise ValueError("the webhook certificate needs at least one host name or address")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateError(NO_OPENSSL)
    now = now or datetime.datetime.now(datetime.UTC)
    start, end = _asn1_time(now - BACKDATE), _asn1_time(now + VALIDITY)
    with tempfile.TemporaryDirectory(prefix="respool-webhook-ca-") as scratch:
        work = Path(scratch)
        config = work / "openssl.cnf"
        config.write_text(_config(work, names))
        (work / "index.txt").write_text("")
        # A random positive 128-bit serial (openssl ca counts up from it).
        (work / "serial").write_text(f"{secrets.randbits(127) | 1 << 120:032X}\n")

        def run(*args: str) -> None:
            try:
                result = subprocess.run([openssl, *args], capture_output=True, text=True,
                                        timeout=60, check=False)
            except subprocess.TimeoutExpired as exc:
                raise CertificateError(
                    f"openssl {args[0]} did not finish in 60 s making the webhook's "
                    "certificate") from exc
            if result.returncode != 0:
                raise CertificateError(
                    f"openssl {args[0]} failed making the webhook's certificate: "
                    f"{(result.stderr or result.stdout).strip()[-2000:]}")

        def ca(csr: Path, out: Path, extensions: str, *signing: str) -> None:
            run("ca", "-batch", "-notext", "-config", str(config), "-in", str(csr),
                "-out", str(out), "-startdate", start, "-enddate", end,
                "-extensions", extensions, *signing)

        ca_key, ca_csr, ca_cert = work / "ca.key", work / "ca.csr", work / "ca.crt"
        key, csr, cert = work / "tls.key", work / "tls.csr", work / "tls.crt"
        for private in (ca_key, key):
            run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", str(private))
        run("req", "-new", "-config", str(config), "-key", str(ca_key), "-subj",
            f"/CN={CA_NAME}", "-out", str(ca_csr))
        ca(ca_csr, ca_cert, "ca_extensions", "-selfsign", "-keyfile", str(ca_key))
        run("req", "-new", "-config", str(config), "-key", str(key), "-subj",
            f"/CN={SERVING_NAME}", "-out", str(csr))
        ca(csr, cert, "serving_extensions", "-cert", str(ca_cert), "-keyfile", str(ca_key))
        return ca_cert.read_bytes(), cert.read_bytes(), key.read_bytes()


def _asn1_time(moment: datetime.datetime) -> str:
    """UTCTime as `openssl ca -startdate/-enddate` take it (good until 2049)."""
    return moment.astimezone(datetime.UTC).strftime("%y%m%d%H%M%SZ")


def _config(work: Path, names: list[str]) -> str:
    alternatives = []
    for name in names:
        try:
            alternatives.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError as not_an_address:
            if not name or any(c.isspace() or c in ",\"'\\" for c in name):
                raise ValueError(
                    f"not a host name for the webhook certificate: {name!r}") from not_an_address
            alternatives.append(f"DNS:{name}")
    return "\n".join([
        "[ca]",
        "default_ca = respool_ca",
        "[respool_ca]",
        f"database = {work / 'index.txt'}",
        f"serial = {work / 'serial'}",
        f"new_certs_dir = {work}",
        "default_md = sha256",
        "policy = any_subject",
        "unique_subject = no",
        "email_in_dn = no",
        "copy_extensions = none",
        "[any_subject]",
        "commonName = supplied",
        "[req]",
        "distinguished_name = subject",
        "prompt = no",
        "[subject]",
        "[ca_extensions]",
        "basicConstraints = critical, CA:TRUE, pathlen:0",
        "keyUsage = critical, digitalSignature, keyCertSign, cRLSign",
        "subjectKeyIdentifier = hash",
        "[serving_extensions]",
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature",
        "extendedKeyUsage = serverAuth",
        f"subjectAltName = {', '.join(alternatives)}",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
        "",
    ])
