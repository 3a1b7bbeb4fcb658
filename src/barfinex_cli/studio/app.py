"""`StudioApp`: the Textual operations terminal over one provider gateway.

The app owns the data layer and the screens display it. Three workers do all the IO:

- `connect`: asks the provider for a first snapshot; while it does not answer, a waiting screen
  says so and it retries with backoff; a refused token opens the token screen (a token typed
  there restarts it); once it answers, the other two start;
- `feed`: the `/ws` stream (`LiveFeed`), reconnecting by itself; its batches arrive as
  `StudioApp.EventsReceived`, its link changes as `StudioApp.LinkChanged`;
- `poll`: a REST snapshot every `poll_s` (registry, connectors, positions, orders, the advisor's
  decisions and the inspector's status through the proxy), as `StudioApp.SnapshotLoaded`.

Handlers fold messages into `StudioState` and post a replaceable `StateChanged` to the screen on
show, so a burst of events becomes one redraw. Screens are Textual modes, one key away (1-6); the
Signals screen's `ChartRequested` switches to the Market screen and calls its `show_signal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.events import Resize
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerCancelled, WorkerError, WorkerFailed

from barfinex_cli.backoff import delay
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.rest import CandlesResponse
from barfinex_cli.errors import BfxError, ServiceUnreachable, TokenRefused
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.studio.feed import LiveFeed
from barfinex_cli.studio.header import SCREEN_KEYS, StudioHeader
from barfinex_cli.studio.palette import palette_commands
from barfinex_cli.studio.screens.base import StudioScreen
from barfinex_cli.studio.screens.capital import CapitalScreen
from barfinex_cli.studio.screens.decisions import DecisionsScreen
from barfinex_cli.studio.screens.dialogs import (
    ConfirmScreen,
    HelpScreen,
    TokenScreen,
    TooSmallScreen,
    WaitingScreen,
)
from barfinex_cli.studio.screens.market import MarketScreen
from barfinex_cli.studio.screens.risk import RiskScreen
from barfinex_cli.studio.screens.services import ServicesScreen
from barfinex_cli.studio.screens.signals import SignalsScreen
from barfinex_cli.studio.sources import Roles, load_snapshot
from barfinex_cli.studio.state import Connection, Snapshot, StudioState

log = logging.getLogger("bfx.studio")

MIN_SIZE = (80, 24)
"""The smallest terminal the screens draw in; below it a message says so."""


class StudioApp(App[None]):
    """Six screens over one provider, observing; stand-down and resume its only writes."""

    TITLE = "bfx studio"
    MODES = {  # "market" is added per app: its screen takes the state and the history source
        "signals": SignalsScreen,
        "decisions": DecisionsScreen,
        "risk": RiskScreen,
        "capital": CapitalScreen,
        "services": ServicesScreen,
    }
    DEFAULT_MODE = "market"
    BINDINGS = [
        *(Binding(key, f"show('{mode}')", title) for key, mode, title in SCREEN_KEYS),
        Binding("slash", "filter", "Filter"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    class EventsReceived(Message):
        """A batch of live events from the feed."""

        def __init__(self, events: list[Envelope[Any]]) -> None:
            super().__init__()
            self.events = events

    class LinkChanged(Message):
        """The feed's link to the provider changed state."""

        def __init__(self, connection: Connection) -> None:
            super().__init__()
            self.connection = connection

    class SnapshotLoaded(Message):
        """A REST snapshot arrived; only the newest matters."""

        def __init__(self, snapshot: Snapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, StudioApp.SnapshotLoaded)

    class ProviderWaited(Message):
        """The provider did not answer the connect worker; it retries after `retry_in_s`."""

        def __init__(self, reason: str, retry_in_s: float, attempts: int) -> None:
            super().__init__()
            self.reason, self.retry_in_s, self.attempts = reason, retry_in_s, attempts

    class TokenWasRefused(Message):
        """The provider refused the token."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        theme: str | None = None,
        poll_s: float = 5.0,
        clock: Callable[[], datetime] | None = None,
        min_size: tuple[int, int] = MIN_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
        feed_options: dict[str, Any] | None = None,
        connect: bool = True,
    ) -> None:
        """Prepare the app; nothing connects until it runs.

        Args:
            url: The provider gateway, e.g. `http://127.0.0.1:8081`.
            token: The gateway token (None: none; the token screen asks).
            theme: A Textual theme name (`bfx studio --theme`).
            poll_s: Seconds between REST snapshots.
            clock: The wall clock the header shows (tests fix it).
            min_size: The smallest terminal to draw in.
            transport: An httpx transport for the REST calls (tests; None: the network).
            feed_options: Keyword arguments for `LiveFeed` (batching and backoff).
            connect: False leaves the workers off (snapshot tests fill the state themselves).
        """
        super().__init__()
        self.url = url.rstrip("/")
        self.token = token
        self.poll_s = poll_s
        self.clock = clock
        self.min_size = min_size
        self.transport = transport
        self.feed_options = feed_options or {}
        self.auto_connect = connect
        self.state = StudioState()
        self.feed: LiveFeed | None = None
        self.client: GatewayClient = self._client()
        self.roles = Roles(self.url, token, transport=transport)
        self._waiting: WaitingScreen | None = None
        self._token_screen: TokenScreen | None = None
        self._too_small: TooSmallScreen | None = None
        self._flush_pending = False
        self.add_mode("market", lambda: MarketScreen(self.state, self))
        if theme is not None:
            self.theme = theme

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, *, limit: int = 500,
        since_ms: int | None = None, until_ms: int | None = None,
    ) -> CandlesResponse:  # fmt: skip
        """Return a series' closed candles through the current client (the Market screen's
        history source: the client is rebuilt when a new token is typed)."""
        return await self.client.candles(
            exchange, symbol, timeframe, limit=limit, since_ms=since_ms, until_ms=until_ms
        )

    def _client(self) -> GatewayClient:
        # one retry: an idle keep-alive connection the server closed as we reused it is no outage
        return GatewayClient(self.url, self.token, timeout=5, retries=1, transport=self.transport)

    # --- lifecycle ------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)
        self._check_size(self.size.width, self.size.height)
        if self.auto_connect:
            self.connect()

    async def on_unmount(self) -> None:
        workers = list(self.workers)
        self.workers.cancel_all()
        await _ended(workers)
        await self.client.aclose()
        await self.roles.aclose()

    def _tick(self) -> None:
        if self.feed is not None and self.feed.skipped != self.state.skipped:
            self.state.skipped = self.feed.skipped  # malformed frames make no batch to say so
            self.state.versions["health"] += 1
            self._changed()
        if not self.screen_stack:  # the clock's timer fired while the app was closing
            return
        screen = self.screen
        if isinstance(screen, StudioScreen):
            screen.refresh_header()
        elif isinstance(screen, MarketScreen):
            self._changed()

    def on_resize(self, event: Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        small = width < self.min_size[0] or height < self.min_size[1]
        if small and self._too_small is None:
            self._too_small = TooSmallScreen((width, height), self.min_size)
            self.push_screen(self._too_small)
        elif small and self._too_small is not None:
            self._too_small.resized((width, height))
        elif not small and self._too_small is not None:
            self._too_small.dismiss()
            self._too_small = None

    # --- workers --------------------------------------------------------------------------------

    @work(exclusive=True, group="connect")
    async def connect(self) -> None:
        """Load the first snapshot (waiting and retrying while the provider is away)."""
        attempts = 0
        while True:
            try:
                snapshot = await load_snapshot(self.client, self.roles)
            except ServiceUnreachable as exc:
                attempts += 1
                wait = delay(attempts, 0.5, 10.0)
                self.post_message(self.ProviderWaited(str(exc), wait, attempts))
                await asyncio.sleep(wait)
                continue
            except TokenRefused as exc:
                self.post_message(self.TokenWasRefused(str(exc)))
                return
            break
        self.post_message(self.SnapshotLoaded(snapshot))
        self.run_feed()
        self.poll()

    @work(exclusive=True, group="feed")
    async def run_feed(self) -> None:
        """Stream `/ws` until the app ends."""
        self.feed = LiveFeed(
            self.url,
            self.token,
            lambda events: self.post_message(self.EventsReceived(events)),
            lambda link: self.post_message(self.LinkChanged(link)),
            **self.feed_options,
        )
        await self.feed.run()

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        """Take a REST snapshot every `poll_s`."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                snapshot = await load_snapshot(self.client, self.roles)
            except TokenRefused as exc:
                self.post_message(self.TokenWasRefused(str(exc)))
                return
            except BfxError as exc:  # the feed shows the link; the next poll tries again
                log.warning("studio: snapshot failed: %s", exc)
                continue
            self.post_message(self.SnapshotLoaded(snapshot))

    @work(group="poll-once")
    async def refresh_now(self) -> None:
        """Take a snapshot at once (after a write); the poll goes on as before."""
        try:
            self.post_message(self.SnapshotLoaded(await load_snapshot(self.client, self.roles)))
        except BfxError as exc:
            log.warning("studio: snapshot failed: %s", exc)

    # --- messages -------------------------------------------------------------------------------

    def on_studio_app_events_received(self, message: EventsReceived) -> None:
        for event in message.events:
            self.state.apply(event)
        self._changed()

    def on_studio_app_link_changed(self, message: LinkChanged) -> None:
        self.state.set_connection(message.connection)
        if message.connection.state == "refused":
            self._ask_token(message.connection.detail)
        self._changed()

    def on_studio_app_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        self.state.apply_snapshot(message.snapshot)
        if self._waiting is not None:
            self._waiting.dismiss()
            self._waiting = None
        if self._token_screen is not None:
            self._token_screen.dismiss()
            self._token_screen = None
        self._changed()

    def on_studio_app_provider_waited(self, message: ProviderWaited) -> None:
        self.state.set_connection(Connection("unreachable", message.reason, message.retry_in_s))
        if self._waiting is None:
            self._waiting = WaitingScreen(self.url)
            self.push_screen(self._waiting)
        self._waiting.show_attempt(message.reason, message.retry_in_s, message.attempts)
        self._changed()

    def on_studio_app_token_was_refused(self, message: TokenWasRefused) -> None:
        self.state.set_connection(Connection("refused", message.reason))
        self._ask_token(message.reason)

    def _ask_token(self, reason: str) -> None:
        if self._waiting is not None:
            self._waiting.dismiss()
            self._waiting = None
        if self._token_screen is None:
            self._token_screen = TokenScreen(self.url, reason)
            self.push_screen(self._token_screen)

    async def on_token_screen_token_entered(self, message: TokenScreen.TokenEntered) -> None:
        self.token = message.token
        await _ended(
            [*self.workers.cancel_group(self, "feed"), *self.workers.cancel_group(self, "poll")]
        )
        await self.client.aclose()
        await self.roles.aclose()
        self.client = self._client()
        self.roles = Roles(self.url, self.token, transport=self.transport)
        self.connect()

    async def on_signals_screen_chart_requested(
        self, message: SignalsScreen.ChartRequested
    ) -> None:
        if self._blocked():
            return
        await self.switch_mode("market")
        screen = self.screen
        if isinstance(screen, MarketScreen):
            s = message.signal.payload
            screen.show_signal(s.exchange, s.symbol, s.timeframe, s.candle_time)

    def _changed(self) -> None:
        if not self.screen_stack:  # closing: nothing left to draw on
            return
        screen = self.screen
        if isinstance(screen, StudioScreen):
            screen.post_message(StudioScreen.StateChanged())
        elif isinstance(screen, MarketScreen) and not self._flush_pending:
            self._flush_pending = True  # a burst of batches makes one redraw of the chart
            self.set_timer(StudioScreen.REDRAW_S, self._flush_market)

    def _flush_market(self) -> None:
        self._flush_pending = False
        if not self.screen_stack:  # the timer fired while the app was closing
            return
        screen = self.screen
        if isinstance(screen, MarketScreen) and screen.is_mounted:
            if not screen.query(StudioHeader):
                screen.mount(StudioHeader(), before=0)  # the chart screen composes none itself
            screen.query_one(StudioHeader).show(self.state, self._now(), "market")
            screen.state_changed(())

    def _now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)

    # --- actions --------------------------------------------------------------------------------

    def _blocked(self) -> bool:
        gates = (self._waiting, self._token_screen, self._too_small)
        return any(s is not None for s in gates) or isinstance(self.screen, ModalScreen)

    def action_show(self, mode: str) -> None:
        """Switch to a screen by its mode name."""
        if self._blocked() or self.current_mode == mode:
            return
        self.switch_mode(mode)
        self.call_after_refresh(self._changed)

    def action_filter(self) -> None:
        """Open the filter of the screen on show."""
        if not self._blocked() and isinstance(self.screen, StudioScreen):
            self.screen.open_filter()

    def action_help(self) -> None:
        """Show the keys."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def confirm_then(self, question: str, confirm: str, then: Callable[[], object]) -> None:
        """Ask `question`; run `then` only if the user confirms."""

        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.push_screen(ConfirmScreen(question, confirm), answered)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)


async def _ended(workers: list[Worker[Any]], within_s: float = 3.0) -> None:
    """Wait (a bounded time) for cancelled workers to finish unwinding.

    Cancelling only asks: a worker's websocket or in-flight request closes its connection as it
    unwinds. Closing the clients, or the app, before that left their sockets to the garbage
    collector (an unclosed-socket warning in a later test).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            for worker in workers:
                with contextlib.suppress(WorkerCancelled, WorkerFailed, WorkerError):
                    await worker.wait()
