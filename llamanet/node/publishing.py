"""The node's signed capability record: proof of work, signing, storing it in the
DHT and announcing the capabilities it lists, and the one loop that republishes
it (at half-life, or sooner when speed or load drift, models change or a
warm-up finishes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import multiaddr
import trio

from llamanet.adapters.dht import LlamanetDHT
from llamanet.errors import LocalProtocolError, RecordError
from llamanet.protocol.config import RecordPolicy
from llamanet.protocol.pow import solve_pow
from llamanet.protocol.records import (
    CapabilityRecord,
    ModelInfo,
    SignedRecord,
    open_record,
    seal_record,
)
from llamanet.trust.keys import Identity

from .config import NodeConfig
from .perf import drifted
from .pow_cache import cached_pow, save_pow
from .worker import Worker

log = logging.getLogger(__name__)

MODEL_REFRESH_TIMEOUT: Final = 30.0
MAX_RECORD_ADDRS: Final = 16


class Publisher:
    """Signs and publishes a node's record; :meth:`run` is the only publisher, so
    two publishes never race.  ``transport_addrs`` gives the addresses to list."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        identity: Identity,
        policy: RecordPolicy,
        worker: Worker,
        dht: LlamanetDHT,
        clock: Callable[[], float],
        transport_addrs: Callable[[], list[multiaddr.Multiaddr]],
    ) -> None:
        self._config = config
        self._identity = identity
        self._policy = policy
        self._worker = worker
        self._dht = dht
        self._clock = clock
        self._transport_addrs = transport_addrs
        self.record: SignedRecord | None = None
        """The record we publish now (``None`` until :meth:`prepare`)."""
        self._pow_nonce = b""
        self._provided_caps: tuple[str, ...] = ()
        self._provided_at = 0.0
        self.first_publish = trio.Event()
        """Set once our record and provider keys have been published the first time."""
        self._republish = trio.Event()
        self._published_at = -float("inf")
        self.drift_republishes = 0
        """Republishes caused by measured speed or load drifting from the record."""

    async def prepare(self) -> None:
        """Find our proof of work (cached beside the identity) before the node
        listens; the first record is signed by :meth:`sign_first`."""
        difficulty = self._config.pow_difficulty
        nonce = cached_pow(self._config.home, self._identity, difficulty)
        if nonce is None:
            started = time.perf_counter()
            nonce = await trio.to_thread.run_sync(solve_pow, self._identity.peer_id, difficulty)
            assert nonce is not None
            log.info(
                "proof of work for %d bits found in %.2f s",
                difficulty,
                time.perf_counter() - started,
            )
            save_pow(self._config.home, self._identity, difficulty, nonce)
        self._pow_nonce = nonce

    def sign_first(self) -> None:
        """Sign our first record (once listening: it lists our addresses)."""
        self.record = self.sign()

    def sign(self) -> SignedRecord:
        """A fresh record of what we serve now, checked with the rules peers apply."""
        now = self._clock()
        previous = self.record.seq if self.record else 0
        record = CapabilityRecord(
            peer=self._identity.peer_id,
            seq=max(int(now * 1000), previous + 1),
            iat=int(now),
            exp=int(now + self._config.record_ttl),
            caps=tuple(self._worker.capabilities()),
            addrs=tuple(a.to_bytes() for a in self._transport_addrs()[:MAX_RECORD_ADDRS]),
            models=tuple(self._worker.models()),
            perf=self._worker.perf(),
            load=self._worker.load,
            limits={
                "max_concurrency": self._config.max_concurrency,
                "max_input_bytes": self._config.max_input_bytes,
            },
            price=self._config.price,
            pow=self._pow_nonce,
        )
        envelope = seal_record(record, self._identity)
        return open_record(
            envelope, now=now, policy=self._policy, expected_peer=self._identity.peer_id
        )

    async def publish(self) -> SignedRecord:
        """Sign a fresh record, store it in the DHT and announce our capabilities."""
        record = self.record = self.sign()
        stored: list[int] = []
        announced: list[str] = []

        async def put() -> None:
            stored.append(await self._dht.put_record(record))

        async def provide() -> None:
            # Provider records live 48 h on receivers and announcing is paced, so
            # they are renewed every record_ttl or when our capabilities change,
            # not at every republish.
            caps = record.record.caps
            now = self._clock()
            if caps != self._provided_caps or now - self._provided_at >= self._config.record_ttl:
                announced.extend(await self._dht.provide(caps))
                self._provided_caps, self._provided_at = caps, now

        async with trio.open_nursery() as nursery:
            nursery.start_soon(put)
            nursery.start_soon(provide)
        log.info(
            "published record seq %d to %d peers; provided %d keys",
            record.seq,
            stored[0],
            len(announced),
        )
        return record

    def request_republish(self) -> None:
        """Publish a fresh record now (the publish loop does it)."""
        self._republish.set()

    async def run(self) -> None:
        """The only publisher: at half-life, or sooner when asked."""
        while True:
            self._republish = trio.Event()
            try:
                await self.publish()
            except (RecordError, LocalProtocolError) as exc:
                log.error("could not publish our record: %s", exc)
            self._published_at = trio.current_time()
            self.first_publish.set()
            with trio.move_on_after(self._config.record_ttl / 2):
                await self._republish.wait()

    async def follow_performance(self) -> None:
        """Republish when measured speed or load drift from the published record,
        at most once per ``perf_republish_interval``."""
        while True:
            await trio.sleep(self._config.perf_check_interval)
            if not self.first_publish.is_set():
                continue
            moved = drifted(self._published_figures(), self._current_figures())
            since = trio.current_time() - self._published_at
            if moved and since >= self._config.perf_republish_interval:
                log.info("republishing: %s drifted", ", ".join(moved))
                self.drift_republishes += 1
                self.request_republish()

    async def follow_models(self) -> None:
        """Follow the model servers: models pulled or removed, a server gone or
        back.  A change is republished at once."""
        while True:
            await trio.sleep(self._config.model_refresh_interval)
            before = self._offer()
            for backend in self._worker.backends:
                refresh = getattr(backend, "refresh", None)
                if refresh is None:
                    continue
                with trio.move_on_after(MODEL_REFRESH_TIMEOUT) as scope:
                    await refresh()
                if scope.cancelled_caught:
                    log.warning("%r did not say which models it serves in time", backend)
            self._worker.refresh_capabilities()
            if self._offer() != before:
                log.info("models changed: now serving %s", ", ".join(self._worker.capabilities()))
                self.request_republish()

    async def warm_up(self) -> None:
        """Warm the backends up, and republish with what that measured."""
        if await self._worker.warm_up():
            self.request_republish()

    def _offer(self) -> tuple[object, ...]:
        models = tuple((m.name, m.digest, m.ctx) for m in self._worker.models())
        return (tuple(self._worker.capabilities()), models)

    def _published_figures(self) -> dict[str, float]:
        if self.record is None:
            return {}
        record = self.record.record
        return _figures(record.perf, record.load, record.models)

    def _current_figures(self) -> dict[str, float]:
        return _figures(self._worker.perf(), self._worker.load, self._worker.models())


def _figures(
    perf: Mapping[str, float], load: float, models: Iterable[ModelInfo]
) -> dict[str, float]:
    """The figures whose drift triggers a republish (unmeasured ones left out)."""
    figures: dict[str, float] = {**perf, "load": load}
    for model in models:
        figures[f"{model.name}.ttft_ms"] = model.ttft_ms
        figures[f"{model.name}.tokens_per_s"] = model.tokens_per_s
    return {k: v for k, v in figures.items() if v or k == "load"}
