"""Regular expressions shared by the pydantic models and the CRD schemas.

They are written in the common subset of Python ``re``, pydantic-core's Rust regex and Go's RE2
(which the API server uses for OpenAPI ``pattern``), so a value the models accept is a value the
API server accepts and the other way round. What a regular expression cannot judge (an idset
that is not ascending, a hostlist that names the wrong number of hosts) is left to the
operator, which reports it as ``InvalidSpec``.
"""

from __future__ import annotations

# RFC 22 idset: ascending, distinct, non-negative decimal integers without leading zeros,
# written as single IDs or ``a-b`` runs, separated by commas, optionally inside one pair of
# brackets. IDs are limited to seven digits (ranks, cores and GPUs below ten million), which
# keeps hostile inputs such as "0-99999999999" out at admission.
_ID = r"(0|[1-9][0-9]{0,6})"
_IDRUN = rf"{_ID}(-{_ID})?"
_IDLIST = rf"{_IDRUN}(,{_IDRUN})*"
IDSET = rf"^({_IDLIST}|\[{_IDLIST}\])?$"
"""An RFC 22 idset; the empty string is the empty set."""

NONEMPTY_IDSET = rf"^({_IDLIST}|\[{_IDLIST}\])$"

# RFC 29 hostlist: comma-separated terms ``prefix[idlist]suffix``; inside brackets numbers may
# carry leading zeros, which set the width (``n[008-010]``).
_HOSTCHARS = r"[A-Za-z0-9._-]"
_HOSTNUM = r"[0-9]{1,7}"
_HOSTRUN = rf"{_HOSTNUM}(-{_HOSTNUM})?"
_HOSTTERM = rf"({_HOSTCHARS}+|{_HOSTCHARS}*\[{_HOSTRUN}(,{_HOSTRUN})*\]{_HOSTCHARS}*)"
HOSTLIST = rf"^{_HOSTTERM}(,{_HOSTTERM})*$"
"""A non-empty RFC 29 hostlist."""

# Go duration, non-negative, written the way Go prints one: a bare 0, or terms in the order
# h, m, s, ms, us, ns, each unit at most once. The digits allowed per unit (h: 6, m: 7, s: 9,
# ms: 12, us: 15, ns: 18, each with up to 9 fraction digits) keep the largest value that matches
# (about 260 years) below Go's limit (about 292 years), so every accepted string is a valid
# Go duration: the API server's CEL duration() never fails on one, and a start time up to year
# 9700 plus any duration stays within what RFC 3339 can write.
_DURATION_TERMS = [
    rf"(([0-9]{{1,{digits}}}(\.[0-9]{{0,9}})?|\.[0-9]{{1,9}}){unit})"
    for unit, digits in (("h", 6), ("m", 7), ("s", 9), ("ms", 12), ("us", 15), ("ns", 18))
]
# One alternative per first term present (RE2 has no look-ahead to say "not empty" otherwise).
DURATION = "^(0|" + "|".join(
    _DURATION_TERMS[first] + "".join(term + "?" for term in _DURATION_TERMS[first + 1:])
    for first in range(len(_DURATION_TERMS))
) + ")$"

# RFC 3339 date-time with a mandatory zone (what Kubernetes and CEL's timestamp() accept).
RFC3339 = (
    r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)

# Times the pattern accepts but that lie outside the years 1 to 9999 once their zone offset is
# applied (CEL's timestamp() would fail on them): the CEL rules skip these, and the operator
# reports them as InvalidSpec.
RFC3339_OUT_OF_RANGE = r"^(9999-12-31[Tt].*-|0001-01-01[Tt].*\+)"

# A DNS-1123 label: pool names become part of reservation IDs and metric labels.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A DNS subdomain (RFC 1123), as Kubernetes object names such as a PriorityClass's are.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Flux property names (RFC 20): no ! & ' " ^ ` | ( ) and no white space; a leading ^ in a
# constraint negates the property (RFC 31).
PROPERTY_NAME = r"^[^!&'\"^`|()\s]+$"
PROPERTY_MATCH = r"^\^?[^!&'\"^`|()\s]+$"

# Kubernetes label keys/values, for namespaceSelector (metav1.LabelSelector).
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"

# metav1.Condition fields.
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

# status.bookingSeal: "v1." and an HMAC-SHA256 in unpadded base64url (respool.controller.
# booking_seal makes and checks it).
BOOKING_SEAL = r"^v1\.[A-Za-z0-9_-]{43}$"
