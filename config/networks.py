"""Source-network allowlists, and finding the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# 2Checkout's published webhook source ranges (Avangate "Secure webhooks" page, plus the
# 162.221.60.0/22 range the 2Checkout version of that page adds). 2Checkout warns the list grows:
# treat it as advisory and watch the rejection log after enabling it.
PRESETS: dict[str, tuple[str, ...]] = {
    "2checkout": ("91.220.121.0/25", "5.35.210.128/25", "184.106.7.192/29", "85.17.14.128/27", "162.221.60.0/22"),
}


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs and preset names; raises ValueError naming the bad entry."""
    out: list[Network] = []
    for value in values:
        if value in PRESETS:
            out.extend(ipaddress.ip_network(v) for v in PRESETS[value])
            continue
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network (CIDR) or a preset ({', '.join(PRESETS)})") from None
    return tuple(out)


def _addr(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value.strip().split("%")[0])
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> Address | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries left of it are client-controlled)."""
    addr = _addr(peer) if peer else None
    if addr is None or not forwarded_for or not any(addr in net for net in trusted):
        return addr
    for hop in reversed(forwarded_for.split(",")):
        hop_addr = _addr(hop)
        if hop_addr is None:
            return None
        if not any(hop_addr in net for net in trusted):
            return hop_addr
    return addr


def allowed(addr: Address | None, networks: Sequence[Network]) -> bool:
    return addr is not None and any(addr in net for net in networks)
