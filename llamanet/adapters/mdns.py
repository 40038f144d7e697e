"""LAN discovery over mDNS, on python-zeroconf directly.

py-libp2p 0.8.1's own mDNS module is not used: it resolves peers with
``zeroconf.get_service_info`` (which also needs SRV and A records, so peers that
answer as the spec says are never found), advertises further addresses as
``dnsaddr2=``, ``dnsaddr3=``, blocks the trio loop about 1.5 s while
registering, and runs its callbacks on zeroconf's thread against shared state.

Here zeroconf keeps its own thread and asyncio loop (an implementation detail of
the library, confined to this module).  Its callbacks only forward events into a
trio memory channel; registration and unregistration run in a worker thread
(``trio.to_thread``), so the trio loop never waits on zeroconf.  Peers are read
from the PTR target and its TXT record only (:mod:`discovery.mdns_records`).
What we answer: PTR, and TXT with one ``dnsaddr=`` string per address; zeroconf
adds SRV and A records, which DNS-SD tools expect and the spec allows.

Safety: tests, benchmarks and simnet use mDNS only inside network namespaces they
create.  :func:`check_namespace_allowed` enforces it when ``LLAMANET_MDNS_GUARD``
is set (the test suite sets it): starting mDNS in the namespace of PID 1 then
raises instead of sending multicast on the machine's network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.const import _CLASS_IN, _TYPE_TXT

from llamanet.discovery.mdns_records import (
    MdnsPeer,
    decode_txt_rdata,
    encode_txt_rdata,
    peer_from_answer,
    txt_strings,
)
from llamanet.errors import DecodeError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

GUARD_ENV: Final = "LLAMANET_MDNS_GUARD"


@dataclass(frozen=True, slots=True)
class PeerSeen:
    peer: MdnsPeer


@dataclass(frozen=True, slots=True)
class PeerGone:
    """The peer said goodbye (TTL 0) or its PTR record expired."""

    instance: str


MdnsEvent = PeerSeen | PeerGone


def in_root_namespace() -> bool:
    """True when this process shares PID 1's network namespace."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:  # no /proc (not Linux): namespaces cannot be told apart
        return False


def check_namespace_allowed() -> None:
    if os.environ.get(GUARD_ENV) and in_root_namespace():
        raise RuntimeError(
            "mDNS refused: LLAMANET_MDNS_GUARD is set and this is the root network "
            "namespace (tests may use mDNS only inside namespaces they create)"
        )


class MdnsDiscovery:
    """Announces this node and reports peers under ``service``."""

    def __init__(
        self,
        service: str,
        peer_name: str,
        self_peer: bytes,
        addrs: Callable[[], list[str]],
    ) -> None:
        self.service = service
        self.instance = f"{peer_name}.{service}"
        self.self_peer = self_peer
        self._addrs = addrs
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None

    def _service_info(self) -> ServiceInfo | None:
        full = self._addrs()
        strings = txt_strings(full)
        if not strings:
            return None
        hosts, port = [], 0
        for addr in full:
            parts = addr.split("/")
            if len(parts) > 4 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
                hosts.append(parts[2])
                port = port or int(parts[4])
        usable = [h for h in hosts if not ipaddress.ip_address(h).is_loopback] or hosts
        return ServiceInfo(
            self.service,
            self.instance,
            port=port,
            properties=encode_txt_rdata(strings),
            server=self.instance.split(".")[0] + ".local.",
            parsed_addresses=list(dict.fromkeys(usable)),
        )

    async def run(
        self,
        events: trio.MemorySendChannel[MdnsEvent],
        *,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Announce, browse and forward events until cancelled; says goodbye on exit."""
        check_namespace_allowed()
        token = trio.lowlevel.current_trio_token()
        zc = await trio.to_thread.run_sync(lambda: Zeroconf(ip_version=IPVersion.V4Only))
        self._zc = zc

        def forward(event: MdnsEvent) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(_send_nowait, events, event, trio_token=token)

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            # zeroconf's thread: read its cache, forward, touch nothing of ours.
            if state_change is ServiceStateChange.Removed:
                forward(PeerGone(name))
                return
            strings: list[bytes] = []
            for record in zeroconf.cache.get_all_by_details(name.lower(), _TYPE_TXT, _CLASS_IN):
                with contextlib.suppress(DecodeError):
                    strings.extend(decode_txt_rdata(record.text))  # type: ignore[attr-defined]
            peer = peer_from_answer(name, service_type, strings, self_peer=self.self_peer)
            if peer is not None:
                forward(PeerSeen(peer))

        browser: ServiceBrowser | None = None
        try:
            self._info = self._service_info()
            if self._info is not None:
                await trio.to_thread.run_sync(zc.register_service, self._info)
            browser = ServiceBrowser(zc, [self.service], handlers=[on_change])
            task_status.started()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                await trio.to_thread.run_sync(self._shutdown, browser)

    def _shutdown(self, browser: ServiceBrowser | None) -> None:
        zc = self._zc
        if zc is None:
            return
        if browser is not None:
            browser.cancel()
        if self._info is not None:
            # Goodbye: our records again with TTL 0, so peers drop us at once.
            zc.unregister_service(self._info)
        zc.close()
        self._zc = None


def _send_nowait(channel: trio.MemorySendChannel[MdnsEvent], event: MdnsEvent) -> None:
    # A full or closed channel drops the event: the next announcement repeats it.
    with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        channel.send_nowait(event)
