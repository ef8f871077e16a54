"""What the plain `respool` package leaves out, and the error that says how to get it.

`pip install respool` holds the operator (kopf and aiohttp are its HTTP stack) and the engine;
the client -- the Python API (`respool.client`), `respool get/describe/reserve/release/free` and
`respool dashboard` -- is built on the official Kubernetes client, which is large (over 100 MB
with byte code) and which the operator never imports. It comes with the ``client`` extra:
`pip install 'respool[client]'`. The operator's image installs the plain package.

This module imports nothing of respool's, so the CLI can use it before any client module loads.
"""

from __future__ import annotations

#: Top-level modules that only the ``client`` extra installs: the official Kubernetes client
#: and the HTTP library it is built on.
CLIENT_EXTRA_MODULES = frozenset({"kubernetes", "urllib3"})
CLIENT_EXTRA_INSTALL = "pip install 'respool[client]'"


class ClientExtraMissing(ModuleNotFoundError):
    """respool's client was imported where only the operator's dependencies are installed."""

    def __init__(self, module: str | None) -> None:
        super().__init__(
            f"respool's client needs the Kubernetes Python client (module {module!r} is not "
            "installed): the plain `respool` package holds the operator only. Install the "
            f"client with `{CLIENT_EXTRA_INSTALL}` (in a checkout: `uv sync --extra client`).",
            name=module,
        )


def is_client_extra_missing(error: ModuleNotFoundError) -> bool:
    """Whether ``error`` is the import of a module that only the ``client`` extra installs."""
    if isinstance(error, ClientExtraMissing):
        return True
    return (error.name or "").split(".")[0] in CLIENT_EXTRA_MODULES
