"""Which ``Host`` a dashboard answers: one rule for the live page and optuna-dashboard.

A browser sends the name it was pointed at as ``Host``. Answering only known names stops another
web site from reading the studies through DNS rebinding: its own name, resolved to this machine,
arrives as ``Host``. Loopback names are always known; so are the address the server is bound to
(unless that is every interface) and the names its user lists (``--allowed-hosts``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EVERY_INTERFACE = frozenset({"0.0.0.0", "::"})  # bound there, the address names no host

_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a DNS name or an IPv4 address, ASCII only
_HOST = re.compile(r"(?:(?P<name>[A-Za-z0-9_.-]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::[0-9]{1,5})?")


def parse_name(text: str) -> str | None:
    """``text`` as a host name (lower case; addresses in short form), or None if it is none."""
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text.lower() if _NAME.fullmatch(text) else None


def host_name(header: str | None) -> str | None:
    """The name a ``Host`` header carries; None when the header is missing or malformed.

    Parsed here rather than with ``urlsplit``, which raises on some malformed headers.
    """
    match = _HOST.fullmatch(header or "")
    if match is None:
        return None
    if match["ipv6"] is None:
        return parse_name(match["name"])
    try:
        return ipaddress.IPv6Address(match["ipv6"]).compressed
    except ValueError:
        return None


def is_loopback(address: str) -> bool:
    """Whether a server bound to ``address`` is reachable from this machine only."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # '' (every interface) or the name of some interface
        return False


@dataclass(frozen=True)
class HostCheck:
    """The ``Host`` names a server answers; other requests are refused before any work."""

    names: frozenset[str]

    @classmethod
    def for_bind(cls, address: str, allowed: Iterable[str] = ()) -> HostCheck:
        """Loopback names, the bound ``address`` and the ``allowed`` names or addresses."""
        named = (parse_name(name) for name in (address, *allowed))
        return cls(LOOPBACK_NAMES | {name for name in named
                                     if name is not None and name not in EVERY_INTERFACE})

    def refusal(self, header: str | None) -> tuple[HTTPStatus, bytes] | None:
        """The answer to a request with this ``Host`` (status, text); None to serve it."""
        name = host_name(header)
        if name is None:
            return HTTPStatus.BAD_REQUEST, b"malformed Host header"
        if name not in self.names:
            return HTTPStatus.FORBIDDEN, b"unknown host"
        return None


def host_checked(app: WSGIApplication, check: HostCheck) -> WSGIApplication:
    """``app`` (optuna-dashboard's) behind ``check``: a refused request never reaches it."""

    def checked(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        refused = check.refusal(environ.get("HTTP_HOST"))
        if refused is None:
            return app(environ, start_response)
        status, text = refused
        start_response(f"{status.value} {status.phrase}",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
        return [text]

    return checked
