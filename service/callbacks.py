"""Callback URLs: a webhook goes only to a public address, checked when the job is submitted and again at
each delivery (a name may resolve elsewhere later: DNS rebinding).

Refused: loopback, private (RFC 1918, unique-local IPv6), link-local (cloud metadata at 169.254.169.254 and
fd00:ec2::254 among them), shared (100.64.0.0/10, where Alibaba's metadata lives), reserved, unspecified
and multicast addresses; an IPv4 address inside IPv6 (`::ffff:10.0.0.1`) is judged as the IPv4 one. A
name is refused when any address it resolves to is refused. `TTSFLEET_CALLBACK_ALLOW_NETWORKS` lists
networks allowed all the same (an internal receiver, or loopback in tests). At delivery the checked address
is the one connected to (the URL's host is sent in `Host` and TLS's SNI), so the name is not looked up twice.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from schemas.errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class CallbackRefused(InvalidInput):
    """Raised when a callback URL is malformed or points at an address webhooks may not reach."""


def allowed_networks(spec: str) -> list[Network]:
    """`"10.1.0.0/16,::1/128"` as networks.

    Raises:
        InvalidInput: a part is not a network.
    """
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]
    except ValueError as err:
        raise InvalidInput(f"TTSFLEET_CALLBACK_ALLOW_NETWORKS: {err}") from err


def address_allowed(address: str, allowed: Sequence[Network]) -> bool:
    """Whether a webhook may go to `address` (an IP address as text)."""
    ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return True
    return ip.is_global and not ip.is_multicast


def split_url(url: str) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of an http(s) URL.

    Raises:
        CallbackRefused: not http(s), no host, or a bad port.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise CallbackRefused(f"callback_url is not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url must be an http:// or https:// URL with a host")
    return parts, parts.hostname, port


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system's resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delivery connects: the checked address, and the URL's own host for `Host` and SNI."""

    url: str  # the callback URL with its host replaced by the checked address
    host_header: str
    sni_hostname: str | None


async def checked_target(url: str, allowed: Sequence[Network], resolver: Resolver = resolve) -> Target:
    """Resolve and check `url`'s host; the address to connect to.

    Raises:
        CallbackRefused: a malformed URL, a name that does not resolve, or a refused address.
    """
    parts, host, port = split_url(url)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await resolver(host, port)
        except OSError as err:
            raise CallbackRefused(f"callback_url's host {host[:100]} does not resolve") from err
    if not addresses or not all(address_allowed(a, allowed) for a in addresses):
        raise CallbackRefused(f"callback_url's host {host[:100]} is a loopback, private, link-local or "
                              "otherwise non-public address; webhooks go to public addresses only")
    chosen = addresses[0]
    literal = f"[{chosen}]" if ":" in chosen else chosen
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return Target(url=parts._replace(netloc=netloc).geturl(), host_header=host_header,
                  sni_hostname=host if parts.scheme == "https" else None)


def check_callback_url(url: str, allowed: Sequence[Network], resolver: Resolver = resolve) -> None:
    """Refuse `url` at submission as delivery would (called from a request's worker thread).

    Raises:
        CallbackRefused: see `checked_target`.
    """
    asyncio.run(checked_target(url, allowed, resolver))
