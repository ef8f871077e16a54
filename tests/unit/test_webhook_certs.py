"""The webhook's self-made certificate (`openssl` command): a real TLS handshake against it."""

from __future__ import annotations

import datetime
import ssl
import subprocess
from pathlib import Path

import pytest

from respool.controller.webhook_certs import (
    BACKDATE,
    VALIDITY,
    CertificateError,
    check_can_make,
    ensure_certificates,
    make_certificates,
)

NAMES = ["127.0.0.1", "::1", "respool-webhook.respool-system.svc",
         "respool-webhook.respool-system.svc.cluster.local"]


def _handshake(files_dir: Path, server_hostname: str) -> None:
    """A TLS handshake in memory: a server with tls.crt/tls.key, a client trusting ca.crt
    only and checking ``server_hostname`` (a DNS name or an IP address)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files_dir / "tls.crt", files_dir / "tls.key")
    client = ssl.create_default_context(cafile=str(files_dir / "ca.crt"))
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, out, peer_in in (("client", client_side, c_out, s_in),
                                         ("server", server_side, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def _openssl_field(path: Path, *args: str) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout", *args],
                          capture_output=True, text=True, check=True, timeout=30).stdout


def test_clients_trusting_the_ca_verify_every_name_and_no_other(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, NAMES)
    assert files.generated
    for name in NAMES:
        _handshake(tmp_path, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tmp_path, "respool-webhook.elsewhere.svc")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(tmp_path, "127.0.0.2")


def test_validity_starts_before_now_and_lasts_a_year(tmp_path: Path) -> None:
    now = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    ca_pem, cert_pem, key_pem = make_certificates(["a.b.svc"], now=now)
    assert b"PRIVATE KEY" in key_pem
    for number, pem in enumerate((ca_pem, cert_pem)):
        path = tmp_path / f"{number}.crt"
        path.write_bytes(pem)
        dates = dict(line.split("=", 1) for line in _openssl_field(path, "-dates").splitlines())
        parse = "%b %d %H:%M:%S %Y GMT"
        begins = datetime.datetime.strptime(" ".join(dates["notBefore"].split()), parse)
        ends = datetime.datetime.strptime(" ".join(dates["notAfter"].split()), parse)
        assert begins.replace(tzinfo=datetime.UTC) == now - BACKDATE
        assert ends.replace(tzinfo=datetime.UTC) == now + VALIDITY
    text = _openssl_field(tmp_path / "0.crt", "-text")
    assert "CA:TRUE, pathlen:0" in text and "Certificate Sign" in text
    text = _openssl_field(tmp_path / "1.crt", "-text")
    assert "CA:FALSE" in text and "TLS Web Server Authentication" in text


def test_each_call_makes_a_new_ca(tmp_path: Path) -> None:
    first, second = make_certificates(["a"])[0], make_certificates(["a"])[0]
    assert first != second


def test_without_openssl_the_error_says_what_to_do(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CertificateError, match=r"needs the openssl command.*--webhook-cert-dir"):
        ensure_certificates(tmp_path / "certs", NAMES)
    assert not (tmp_path / "certs" / "tls.key").exists()


@pytest.mark.parametrize("name", ["", "a,DNS:evil.example", "a b\nc", 'a"b'])
def test_names_that_are_not_host_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        make_certificates(["ok.example", name])


def test_respool_run_says_before_starting_that_it_cannot_make_a_certificate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from respool.cli.main import main

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--webhook-port", "9443"])
    assert str(exit_info.value.code).startswith("respool run: making the webhook's certificate "
                                                "needs the openssl command")
    # A provided certificate needs no openssl.
    ensure_dir = tmp_path / "mounted"
    ensure_dir.mkdir()
    (ensure_dir / "tls.crt").write_text("x")
    (ensure_dir / "tls.key").write_text("x")
    check_can_make(ensure_dir)
    with pytest.raises(CertificateError):
        check_can_make(None)
