"""The parts every role runs on, built once per process: bus, clock, stores, gateway client.

A role's constructor takes what it uses and opens nothing itself; the `Kernel` is where those
things are opened and closed. `bfx provider start` and `bfx detector run` each build a kernel
for their one role; a single-process stack (and later `bfx up --single-process` and
`bfx backtest`) builds one kernel on one `MemoryBus` and one simulated clock and starts every
role on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from barfinex_cli.bus.base import Bus
from barfinex_cli.runtime.clock import Clock, ClockKind, LiveClock, SimClock
from barfinex_cli.runtime.config import (
    AdvisorConfig,
    DetectorConfig,
    InspectorConfig,
    ProviderConfig,
)
from barfinex_cli.runtime.connect import open_bus
from barfinex_cli.runtime.datadir import writable
from barfinex_cli.runtime.settings import Settings

if TYPE_CHECKING:
    import httpx

    from barfinex_cli.advisor.llm import LlmStage
    from barfinex_cli.advisor.service import Advisor
    from barfinex_cli.detector.service import Detector
    from barfinex_cli.inspector.service import Inspector
    from barfinex_cli.provider.connectors.base import MarketConnector
    from barfinex_cli.provider.service import Provider
    from barfinex_cli.runtime.client import GatewayClient
    from barfinex_cli.runtime.recording import Recording
    from barfinex_cli.store.audit import AuditStore
    from barfinex_cli.store.broker import BrokerStore
    from barfinex_cli.store.inspector import InspectorStore
    from barfinex_cli.store.market import MarketStore


class Kernel:
    """Open the shared parts on first use, hand them to roles, close them all at the end.

    Use it as an async context manager. Pass `bus` or `clock` to share ones built elsewhere
    (the kernel then does not close that bus).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        bus: Bus | None = None,
        clock: Clock | None = None,
        audit_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self._audit_path = audit_path
        """Where the audit store is when not under the data directory (a backtest keeps its
        scratch stores apart but records into the user's audit log)."""
        self._bus = bus
        self._own_bus = bus is None
        self._clock = clock
        self._market: MarketStore | None = None
        self._audit: AuditStore | None = None
        self._paper: BrokerStore | None = None
        self._inspector: InspectorStore | None = None
        self._clients: dict[str, GatewayClient] = {}
        self._home_checked = False

    async def __aenter__(self) -> Self:
        await self.bus()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close what this kernel opened: clients, stores, then the bus."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        if self._market is not None:
            self._market.close()
            self._market = None
        if self._audit is not None:
            self._audit.close()
            self._audit = None
        if self._paper is not None:
            self._paper.close()
            self._paper = None
        if self._inspector is not None:
            self._inspector.close()
            self._inspector = None
        if self._bus is not None and self._own_bus:
            await self._bus.close()
            self._bus = None

    def stop_waiting(self) -> None:
        """Tell the bus its role is stopping: its calls stop riding out a Redis outage.

        A stop then takes seconds even with Redis gone (`bus.outage.Outage.stop_waiting`);
        what the role could not acknowledge stays pending for its next start.
        """
        from barfinex_cli.bus.redis_streams import RedisStreamsBus

        if isinstance(self._bus, RedisStreamsBus):
            self._bus.outage.stop_waiting()

    # -- parts ---------------------------------------------------------------------------

    async def bus(self) -> Bus:
        """Return the bus, connecting on first use (`ServiceUnreachable` if Redis is down)."""
        if self._bus is None:
            self._bus = await open_bus(self.settings)
        return self._bus

    def clock(self, kind: ClockKind = "wall") -> Clock:
        """Return the process's clock, made of `kind` on first use; all roles share it."""
        if self._clock is None:
            self._clock = LiveClock() if kind == "wall" else SimClock()
        return self._clock

    def home(self) -> Path:
        """Return the data directory, checked once: it exists and can be written."""
        if not self._home_checked:
            writable(self.settings.home)
            self._home_checked = True
        return self.settings.home

    def market_store(self) -> MarketStore:
        """Return the market history store (`DATA_DIR/market.db`)."""
        if self._market is None:
            from barfinex_cli.store.market import MarketStore

            self.home()
            self._market = MarketStore(self.settings.market_path)
        return self._market

    def audit_store(self) -> AuditStore:
        """Return the audit store (`DATA_DIR/audit.db`)."""
        if self._audit is None:
            from barfinex_cli.store.audit import AuditStore

            self.home()
            self._audit = AuditStore(self._audit_path or self.settings.audit_path)
        return self._audit

    def paper_store(self) -> BrokerStore:
        """Return the paper broker's account store (`DATA_DIR/paper.db`)."""
        if self._paper is None:
            from barfinex_cli.store.broker import BrokerStore

            self.home()
            self._paper = BrokerStore(self.settings.paper_path)
        return self._paper

    def inspector_store(self) -> InspectorStore:
        """Return the inspector's state store (`DATA_DIR/inspector.db`)."""
        if self._inspector is None:
            from barfinex_cli.store.inspector import InspectorStore

            self.home()
            self._inspector = InspectorStore(self.settings.inspector_path)
        return self._inspector

    def client(
        self, url: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> GatewayClient:
        """Return the one gateway client of this process for `url` (default: provider_url)."""
        from barfinex_cli.runtime.client import GatewayClient, token_from

        base = (url or self.settings.provider_url).rstrip("/")
        client = self._clients.get(base)
        if client is None:
            client = GatewayClient(base, token_from(self.settings), transport=transport)
            self._clients[base] = client
        return client

    # -- roles ---------------------------------------------------------------------------

    async def recording(self, group: str = "recorder") -> Recording:
        """Return the audit recorder on this kernel's bus and audit store."""
        from barfinex_cli.runtime.recording import Recording

        return Recording(await self.bus(), self.audit_store(), group=group)

    async def provider(
        self,
        config: ProviderConfig | None = None,
        *,
        on_token_created: Callable[[str, Path], None] | None = None,
        connector: MarketConnector | None = None,
    ) -> Provider:
        """Return a provider on this kernel's parts (`config` defaults to `[provider]`).

        `connector` replaces the one `config` names (a backtest's lock-step replay).
        """
        from barfinex_cli.provider.gateway import auth
        from barfinex_cli.provider.service import Provider, make_connector

        config = config or self.settings.provider
        self.home()

        def token() -> str:
            return auth.ensure_token(self.settings, on_created=on_token_created)

        return Provider(
            config,
            bus=await self.bus(),
            clock=self.clock(config.clock_kind),
            market=self.market_store(),
            connector=connector or make_connector(config),
            token=token,
            home=self.settings.home,
            recording=await self.recording() if config.record else None,
            webhooks=self.settings.webhooks,
            gateway=self.settings.gateway,
            paper_store=self.paper_store() if config.paper else None,
            calendars=self.settings.calendars,
        )

    async def detector(
        self, config: DetectorConfig | None = None, *, client: GatewayClient | None = None
    ) -> Detector:
        """Return a detector on this kernel's parts; its strategy file is loaded (and run) here.

        Its clock: the kernel's if one is set (a single-process stack), else what `config.clock`
        says, where `auto` asks the provider whether it runs on market time.
        """
        from barfinex_cli.detector.loader import load_strategy
        from barfinex_cli.detector.service import Detector
        from barfinex_cli.errors import UsageError

        config = config or self.settings.detector
        if config.strategy is None:
            raise UsageError("no strategy given — name a strategy file (see `strategies/`)")
        if not config.strategy.is_file():
            raise UsageError(
                f"no strategy file at {config.strategy} — see `strategies/` for examples"
            )
        strategy = load_strategy(config.strategy)
        client = client or self.client(config.provider_url)
        if self._clock is None:
            kind: ClockKind
            kind = (await client.health()).clock if config.clock == "auto" else config.clock
            self.clock(kind)
        return Detector(
            config, strategy=strategy, bus=await self.bus(), clock=self.clock(), client=client
        )

    async def advisor(
        self,
        config: AdvisorConfig | None = None,
        *,
        client: GatewayClient | None = None,
        llm: LlmStage | None = None,
    ) -> Advisor:
        """Return an advisor on this kernel's parts; its model file (if any) is loaded here.

        Its clock follows the same rule as a detector's: the kernel's if set, else `config.clock`,
        where `auto` asks the provider whether it runs on market time.
        """
        from barfinex_cli.advisor.service import Advisor

        config = config or self.settings.advisor
        model = None
        if config.model is not None:
            from barfinex_cli.advisor.models import load_model

            model = load_model(config.model)
        client = client or self.client(config.provider_url)
        if self._clock is None:
            kind: ClockKind
            kind = (await client.health()).clock if config.clock == "auto" else config.clock
            self.clock(kind)
        return Advisor(
            config, bus=await self.bus(), clock=self.clock(), client=client, model=model, llm=llm
        )

    async def inspector(
        self, config: InspectorConfig | None = None, *, client: GatewayClient | None = None
    ) -> Inspector:
        """Return an inspector on this kernel's parts; its policy file is validated here.

        An invalid policy file raises `ConfigError` (file, key, reason): the inspector fails
        closed and does not start. Its clock follows the same rule as a detector's.
        """
        from barfinex_cli.inspector.alerts import Telegram
        from barfinex_cli.inspector.governor import Governor
        from barfinex_cli.inspector.policies import default_policy_path, load_policies
        from barfinex_cli.inspector.service import Inspector

        config = config or self.settings.inspector
        path = config.policy or default_policy_path()
        governor = Governor(load_policies(path))
        client = client or self.client(config.provider_url)
        if self._clock is None:
            kind: ClockKind
            kind = (await client.health()).clock if config.clock == "auto" else config.clock
            self.clock(kind)
        return Inspector(
            config,
            bus=await self.bus(),
            clock=self.clock(),
            client=client,
            store=self.inspector_store(),
            governor=governor,
            policy_path=path,
            telegram=Telegram.from_env(config.telegram_api),
        )
