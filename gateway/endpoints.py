"""Provider endpoints the config may name: no credentials in the URL, no metadata services."""

from __future__ import annotations

import ipaddress

from yarl import URL

_METADATA_HOSTS = ("metadata.google.internal", "metadata")
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
               ipaddress.ip_network("fd00:ec2::254/128"))
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_address(host: str) -> Address | None:
    """The IP address ``host`` spells (a lowercase host without its trailing dot), or None
    for a name. ``"2852039166"`` is 169.254.169.254 to getaddrinfo, so it is read as one."""
    try:
        return ipaddress.ip_address(int(host) if host.isdigit() else host.split("%")[0])
    except ValueError:
        return None


def is_metadata(host: str, address: Address | None) -> bool:
    """A cloud metadata service's name, or a link-local address (where they all listen)."""
    return host in _METADATA_HOSTS or (address is not None and (
        any(address in net for net in _LINK_LOCAL if net.version == address.version)
        or address.is_link_local))


def endpoint_problem(endpoint: str) -> str | None:
    """Why a provider endpoint is refused, or None. Never quotes the URL: it may hold a secret."""
    try:
        url = URL(endpoint)
    except ValueError:
        return "is not a valid URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an http:// or https:// URL"
    if url.user is not None or url.password is not None:
        return "must not carry credentials (user:pass@): put them under 'credentials'"
    host = url.host.rstrip(".").lower()
    if is_metadata(host, host_address(host)):
        return "points at a link-local or cloud metadata address: refused"
    return None
