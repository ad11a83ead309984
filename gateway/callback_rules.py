"""Where status callbacks may go: ``server.callback_hosts`` and the SSRF rules (SPEC §8).

A ``callback_url`` is allowed only when its host matches an entry of ``server.callback_hosts``
(an exact name or address, or ``*.example.com`` for any name below example.com). A private,
loopback or otherwise non-public address is a target only when it is listed exactly: a wildcard
never reaches one, not even through DNS (the delivery's resolver checks every address it gets).
Link-local and cloud metadata addresses are never targets. Answers never quote the URL: its path
or query may carry the receiver's token.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from yarl import URL

from gateway.endpoints import Address, host_address, is_metadata
from gateway.schema import Checker
from gateway.yamlsrc import Node, shown
from providers.base import Secret

MAX_URL = 2048  # characters; longer is refused before it is parsed
NOT_LISTED = "its host is not in server.callback_hosts"
NONE_LISTED = ("status callbacks are off: server.callback_hosts is empty (list this URL's host "
               "there)")
PRIVATE = ("points at a private or loopback address: list its host exactly in "
           "server.callback_hosts to allow it")
METADATA = "points at a link-local or cloud metadata address: refused"


def normal_host(host: str) -> str:
    """A host as compared: lowercase, without brackets or a trailing dot."""
    return host.strip("[]").rstrip(".").lower()


def is_public(host: str, address: Address | None) -> bool:
    """Whether ``address`` (None: ``host`` is a name) may be reached without being listed."""
    if address is None:
        return not (host == "localhost" or host.endswith(".localhost"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class CallbackHosts:
    """``server.callback_hosts``, normalized: exact entries and wildcard suffixes."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"

    @classmethod
    def of(cls, entries: Iterable[str]) -> CallbackHosts:
        exact, suffixes = set(), []
        for entry in entries:
            host = normal_host(entry)
            if host.startswith("*."):
                suffixes.append(host[1:])
            else:
                address = host_address(host)
                exact.add(str(address) if address is not None else host)
        return cls(frozenset(exact), tuple(suffixes))

    def listed(self, host: str) -> bool:
        """``host`` (normalized) is an exact entry: any address it has is allowed."""
        address = host_address(host)
        return (str(address) if address is not None else host) in self.exact

    def matches(self, host: str) -> bool:
        """``host`` is an exact entry or a name below a wildcard's domain."""
        return self.listed(host) or (host_address(host) is None and any(
            host.endswith(suffix) for suffix in self.suffixes))

    def reachable(self, host: str, address: Address) -> bool:
        """Whether a connection for ``host`` may go to ``address`` (what DNS answered)."""
        return not is_metadata(host, address) and (
            self.listed(host) or is_public(host, address))


@functools.lru_cache(maxsize=8)
def allowed_hosts(entries: tuple[str, ...]) -> CallbackHosts:
    """``CallbackHosts.of(entries)``, parsed once per config rather than once per send."""
    return CallbackHosts.of(entries)


def url_problem(url: str, hosts: CallbackHosts) -> str | None:
    """Why ``url`` may not receive callbacks, or None."""
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        return "cannot be encoded as UTF-8 (a lone surrogate)"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters"
    try:
        parsed = URL(url)
        scheme, raw_host, port = parsed.scheme, parsed.raw_host, parsed.port
        credentials = parsed.user is not None or parsed.password is not None
    except (ValueError, TypeError):  # yarl: a bad port, an IDNA label it cannot encode
        return "is not a valid URL"
    if scheme not in ("http", "https") or not raw_host:
        return "must be an http:// or https:// URL"
    if not port:
        return "is not a valid URL"
    if credentials:
        return "must not carry credentials (user:pass@)"
    host = normal_host(raw_host)
    address = host_address(host)
    if address is None and (len(host) > 253 or not all(0 < len(x) < 64 for x in host.split("."))):
        return "is not a valid URL"  # not a name DNS could answer for
    if is_metadata(host, address):
        return METADATA
    if hosts.matches(host):
        return None if hosts.listed(host) or is_public(host, address) else PRIVATE
    if not hosts.exact and not hosts.suffixes:
        return NONE_LISTED
    return NOT_LISTED if is_public(host, address) else PRIVATE


def entry_problem(entry: str) -> str | None:
    """Why a ``server.callback_hosts`` entry is refused, or None."""
    host = normal_host(entry)
    name = host[2:] if host.startswith("*.") else host
    if not name or not entry.isascii() or any(c in name for c in "/@?#* \t") or (
            ":" in name and host_address(name) is None):
        return (f"{shown(entry)} is not a host: write a name, *.example.com or an IP "
                "address (no scheme, port or path; an international name in its xn-- form)")
    if host.startswith("*.") and "." not in name:
        return f"{shown(entry)} is too broad: a wildcard needs a domain such as *.example.com"
    if is_metadata(name, host_address(name)):
        return f"{shown(entry)} is a link-local or cloud metadata address: never a callback target"
    return None


def read_callback_secret(check: Checker, node: Node, entries: Iterable[str]) -> Secret:
    """``server.callback_secret`` (a ``${VAR}``), checking ``server.callback_hosts`` with it:
    callbacks are always signed, so hosts without a secret are an error."""
    hosts = list(entries)
    for entry in hosts:
        problem = entry_problem(entry)
        if problem:
            check.problem(node.line_of("callback_hosts"), "server.callback_hosts", problem)
    secret = check.string(node, "callback_secret", "server", secret=True)
    told = any(p.key == "server.callback_secret" for p in check.problems)  # an unset ${VAR}
    if hosts and not secret and not told:
        line = node.line_of("callback_secret" if "callback_secret" in node else "callback_hosts")
        check.problem(line, "server.callback_secret",
                      "is required when callback_hosts is set: callbacks are signed with it")
    return Secret(secret)
