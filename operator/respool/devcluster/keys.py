"""Secrets for a local control plane: an RSA service-account signing key and a bearer token.

The dev cluster must work before anything but the standard library is installed, and must not
depend on an ``openssl`` binary being present, so the RSA key is generated here: two random
primes (Miller-Rabin), the usual exponent 65537, encoded as a PKCS#1 ``RSA PRIVATE KEY`` PEM
that kube-apiserver reads for both ``--service-account-key-file`` and
``--service-account-signing-key-file``.
"""

from __future__ import annotations

import base64
import math
import secrets

PUBLIC_EXPONENT = 65537

def _primes_below(limit: int) -> list[int]:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for n in range(2, math.isqrt(limit) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(range(n * n, limit, n)))
    return [n for n in range(limit) if sieve[n]]


_SMALL_PRIMES = _primes_below(50_000)
# One gcd with the product of all small primes rejects most composites far faster than a
# modular exponentiation (the cost of a Miller-Rabin round) would.
_SMALL_PRIME_PRODUCT = math.prod(_SMALL_PRIMES)


def _is_probable_prime(candidate: int, rounds: int = 20) -> bool:
    # 20 rounds: error below 4**-20 for any input, and far smaller for random candidates.
    if candidate < 2:
        return False
    if candidate <= _SMALL_PRIMES[-1]:
        return candidate in _SMALL_PRIMES
    if math.gcd(candidate, _SMALL_PRIME_PRODUCT) != 1:
        return False
    # candidate - 1 = odd * 2**twos
    odd, twos = candidate - 1, 0
    while odd % 2 == 0:
        odd //= 2
        twos += 1
    for _ in range(rounds):
        witness = secrets.randbelow(candidate - 3) + 2
        x = pow(witness, odd, candidate)
        if x in (1, candidate - 1):
            continue
        for _ in range(twos - 1):
            x = pow(x, 2, candidate)
            if x == candidate - 1:
                break
        else:
            return False
    return True


def _random_prime(bits: int) -> int:
    while True:
        # The top two bits set make the product of two such primes exactly 2*bits long.
        candidate = secrets.randbits(bits) | (0b11 << (bits - 2)) | 1
        if _is_probable_prime(candidate):
            return candidate


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der_integer(value: int) -> bytes:
    # Two's complement, big-endian, with a leading zero byte when the top bit is set.
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(body)) + body


def _der_sequence(*items: bytes) -> bytes:
    body = b"".join(items)
    return b"\x30" + _der_length(len(body)) + body


def rsa_private_key_pem(bits: int = 2048) -> bytes:
    """A new RSA private key in PKCS#1 PEM form (``-----BEGIN RSA PRIVATE KEY-----``)."""
    if bits < 1024 or bits % 2:
        raise ValueError(f"RSA key size must be an even number >= 1024, got {bits}")
    p = q = carmichael = 0
    while p == q or math.gcd(PUBLIC_EXPONENT, carmichael) != 1:
        p = _random_prime(bits // 2)
        q = _random_prime(bits // 2)
        carmichael = math.lcm(p - 1, q - 1)
    if p < q:
        p, q = q, p
    modulus = p * q
    private_exponent = pow(PUBLIC_EXPONENT, -1, carmichael)
    der = _der_sequence(
        _der_integer(0),  # version: two-prime
        _der_integer(modulus),
        _der_integer(PUBLIC_EXPONENT),
        _der_integer(private_exponent),
        _der_integer(p),
        _der_integer(q),
        _der_integer(private_exponent % (p - 1)),
        _der_integer(private_exponent % (q - 1)),
        _der_integer(pow(q, -1, p)),
    )
    encoded = base64.b64encode(der).decode("ascii")
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----\n"
    return pem.encode("ascii")


def bearer_token() -> str:
    """A random bearer token (256 bits, hex) for the static token file."""
    return secrets.token_hex(32)
