"""`status.bookingSeal`: a mark only the operator can make, over what a booking is.

After a restart the operator rebuilds every pool's bookings from the reservations' status
(DESIGN §3, level-based). Status is written through the status subresource, which tenants'
roles cannot write (respool-edit), but anyone who can - an administrator, a tool with a broad
role, a partial write - could otherwise make the operator restore a grant it never made, on
cores another reservation holds. So every status that holds resources carries an HMAC-SHA256,
under a key only the operator holds (respool.controller.seal_key), over exactly what a restore
re-registers: the reservation's UID, the pool's UID, the phase, the ID, the granted R, the
window and the mode booked. A restore re-registers only what carries a seal that checks out;
anything else is re-planned (lifecycle.restore, lifecycle._Decider.decide).

Pure: no I/O, standard library only (lifecycle imports it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

#: The form of a seal (respool.api.patterns.BOOKING_SEAL): this prefix and 43 characters of
#: unpadded base64url (32 bytes).
SEAL_PREFIX = "v1."
#: Shortest key accepted (bytes): HMAC-SHA256's own block of security.
MIN_KEY_BYTES = 32


def _normalized(value: Any) -> Any:
    """JSON as the API server hands it back: a float with no fraction comes back as an integer
    (it decodes `1906596000.0` as a number and encodes it `1906596000`), so both are hashed
    alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def _resource_set(R: Any) -> Any:
    """R without execution.starttime/expiration: the window is sealed as start and end, and
    the R in status keeps the times it was first granted with when the end moves later."""
    if not isinstance(R, Mapping):
        return R
    execution = R.get("execution")
    if not isinstance(execution, Mapping):
        return R
    trimmed = {k: v for k, v in execution.items() if k not in ("starttime", "expiration")}
    return {**R, "execution": trimmed}


class BookingSeal:
    """Seals and checks the booking a reservation's status describes.

    `trust_unsealed`: this process has just created the key (the first start with sealing, or
    the key was deleted), so no seal in any status can be checked yet. Such a start restores
    what it finds as earlier versions did - whatever does not collide - and seals it with its
    first decision; every later start restores only what checks out."""

    def __init__(self, key: bytes, trust_unsealed: bool = False) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a booking seal key needs at least {MIN_KEY_BYTES} bytes, "
                             f"got {len(key)}")
        self._key = bytes(key)
        self.trust_unsealed = trust_unsealed

    def __repr__(self) -> str:  # never the key
        return f"BookingSeal(trust_unsealed={self.trust_unsealed})"

    @staticmethod
    def sealed_fields(rsv_uid: str, pool_uid: str, phase: str | None,
                      booking_id: str | None, R: Any, start: float | None,
                      end: float | None, mode: str) -> bytes:
        """What the seal covers, as canonical bytes."""
        fields = [
            "respool.io/booking/v1", rsv_uid, pool_uid, phase, booking_id,
            _normalized(_resource_set(R)),
            _normalized(start), _normalized(end), mode,
        ]
        return json.dumps(fields, separators=(",", ":"), sort_keys=True,
                          ensure_ascii=True).encode()

    def seal(self, rsv_uid: str, pool_uid: str, phase: str | None, booking_id: str | None,
             R: Any, start: float | None, end: float | None, mode: str) -> str:
        digest = hmac.new(self._key, self.sealed_fields(rsv_uid, pool_uid, phase, booking_id,
                                                        R, start, end, mode),
                          hashlib.sha256).digest()
        return SEAL_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def check(self, seal: Any, rsv_uid: str, pool_uid: str, phase: str | None,
              booking_id: str | None, R: Any, start: float | None, end: float | None,
              mode: str) -> str | None:
        """None when `seal` vouches for this booking, else why not (for a person)."""
        if not seal:
            if self.trust_unsealed:
                return None
            return "its status carries no bookingSeal"
        if not isinstance(seal, str):
            return "its status.bookingSeal is not a string"
        expected = self.seal(rsv_uid, pool_uid, phase, booking_id, R, start, end, mode)
        if hmac.compare_digest(seal.encode(), expected.encode()):
            return None
        if self.trust_unsealed:
            return None
        return ("its status.bookingSeal does not match the booking its status describes "
                "(status written by someone other than the operator, or only in part)")
