"""Kubernetes label selectors (matchLabels + matchExpressions), evaluated on a label dict, and
what the operator knows of each namespace's labels."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class NamespaceLabelsUnknown(Exception):
    """A namespace's labels could not be read (yet): no selector can judge it. The caller
    waits and asks again; it never guesses (an empty label set would admit a namespace to a
    ``NotIn`` or ``DoesNotExist`` selector, and fail an allowed one for a ``matchLabels``)."""


class UnknownLabels(Mapping[str, str]):
    """The labels of a namespace the operator has not been able to read: empty to look at, but
    a selector that meets them raises NamespaceLabelsUnknown instead of answering."""

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


UNKNOWN_LABELS = UnknownLabels()


class NamespaceLabels:
    """Namespace name -> labels, as the watch and the look-ups told them. ``get`` of a
    namespace never seen gives UNKNOWN_LABELS, whatever default the caller passes: a namespace
    the operator knows nothing about is not one without labels."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, str]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def get(self, name: str, _default: Mapping[str, str] | None = None) -> Mapping[str, str]:
        labels = self._labels.get(name)
        return UNKNOWN_LABELS if labels is None else labels

    def set(self, name: str, labels: Mapping[str, str]) -> bool:
        """Record a namespace's labels; True when that changed what is known."""
        new = dict(labels)
        changed = self._labels.get(name) != new
        self._labels[name] = new
        return changed

    def forget(self, name: str) -> None:
        self._labels.pop(name, None)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """True if `labels` satisfy `selector`; None or an empty selector matches everything.
    NamespaceLabelsUnknown when a non-empty selector meets UNKNOWN_LABELS."""
    if not selector:
        return True
    if isinstance(labels, UnknownLabels):
        raise NamespaceLabelsUnknown
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key = requirement.get("key")
        operator = requirement.get("operator")
        values = requirement.get("values") or []
        present = key in labels
        if operator == "In":
            if not present or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if present and labels[key] in values:
                return False
        elif operator == "Exists":
            if not present:
                return False
        elif operator == "DoesNotExist":
            if present:
                return False
        else:
            return False  # an operator we do not know selects nothing (fail closed)
    return True
