"""The Market screen: one series' candles with volume, signal and fill markers, stops and targets.

It reads the studio's state (`StudioState`: the series the store holds, live candles, signals,
fills, orders, positions) whenever the app says a section changed, and loads REST history for
the chosen series in a worker (`CandleSource` is the gateway client's `candles` call), joining the
live candles that arrived meanwhile. A second worker follows the symbol's `market.trade` on the
gateway's /ws (the app's feed leaves trades off) and moves the forming candle, so the last
candle updates live between closes. Pick the series with `s` (symbol) and `t` (timeframe);
zoom and scroll with the chart's keys; `show_signal` jumps to a signal's candle (the Signals
screen asks for it through the app).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, ClassVar, Protocol

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Select, Static

from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.market import TradeExecuted
from barfinex_cli.contracts.rest import CandlesResponse
from barfinex_cli.studio import market_view as mv
from barfinex_cli.studio.chart_model import Bar, CandleSeries
from barfinex_cli.studio.feed import LiveFeed
from barfinex_cli.studio.header import StudioHeader
from barfinex_cli.studio.market_view import SeriesKey
from barfinex_cli.studio.state import StudioState
from barfinex_cli.studio.widgets.candles import CandleChart

HISTORY = 1000
"""Candles loaded from REST when a series is chosen (the chart keeps up to 5,000)."""


class CandleSource(Protocol):
    """Where history comes from: `GatewayClient.candles` has this shape (so has `StudioApp`'s)."""

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, *, limit: int = 500,
        since_ms: int | None = None, until_ms: int | None = None,
    ) -> CandlesResponse: ...  # fmt: skip


class MarketScreen(Screen[None]):
    """Screen 1: the chart of the chosen symbol and timeframe."""

    DEFAULT_CSS = """
    MarketScreen #market-bar { height: 3; padding: 0 1; }
    MarketScreen #market-symbol { width: 32; }
    MarketScreen #market-timeframe { width: 18; }
    MarketScreen #market-status { width: 1fr; padding: 1 2; color: $text-muted; }
    MarketScreen CandleChart { padding: 0 1; }
    """
    AUTO_FOCUS = "CandleChart"  # the chart's keys (zoom, scroll) work whenever the screen shows
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "pick('market-symbol')", "Symbol"),
        Binding("t", "pick('market-timeframe')", "Timeframe"),
        Binding("c", "chart", "Chart", show=False),
        # the chart's keys also work when it lacks focus (a picker has it, or the browser page
        # took focus back): the screen hands them to the chart
        *(
            Binding(b.key, f"chart_key({b.action!r})", b.description, show=b.show)
            for b in CandleChart.BINDINGS
            if isinstance(b, Binding)
        ),
    ]

    class TradesReceived(Message):
        """A batch of the charted symbol's trades (they move the forming candle)."""

        def __init__(self, key: SeriesKey, trades: list[tuple[float, float, datetime]]) -> None:
            self.key, self.trades = key, trades
            super().__init__()

    class HistoryLoaded(Message):
        """The worker read a series' history (or failed to, with the reason in `error`)."""

        def __init__(self, key: SeriesKey, bars: list[Bar], error: str | None = None) -> None:
            self.key, self.bars, self.error = key, bars, error
            super().__init__()

    def __init__(self, state: StudioState, source: CandleSource, *, name: str | None = None,
                 id: str | None = None) -> None:  # fmt: skip
        """Draw from `state`; read history from `source`."""
        super().__init__(name=name, id=id)
        self.state = state
        self.source = source
        self.key: SeriesKey | None = None
        self.keys: list[SeriesKey] = []
        self._pending_jump: datetime | None = None
        self._closed_upto: datetime | None = None
        """Open time of the newest closed candle drawn (trades may draw a newer, forming one)."""
        self._seen: dict[str, int] = {}

    def compose(self) -> ComposeResult:
        """Lay out the header, the pickers, the chart and the key line."""
        yield StudioHeader()
        with Horizontal(id="market-bar"):
            yield Select[str]([], prompt="symbol", id="market-symbol", allow_blank=True)
            yield Select[str]([], prompt="timeframe", id="market-timeframe", allow_blank=True)
            yield Static("waiting for the provider's series…", id="market-status")
        yield CandleChart(id="market-chart")
        yield Footer()

    def on_mount(self) -> None:
        """Draw whatever the state already holds."""
        self.state_changed(())

    # --- what the app calls ---------------------------------------------------------------------

    def state_changed(self, sections: Collection[str]) -> None:
        """Redraw what moved in the state (`sections` is advisory: versions decide)."""
        if self._moved("apps") or not self.keys:
            self._update_pickers()
        if self.key is None:
            return
        if self._moved("candles"):
            self._take_live_candles()
        if self._moved("signals") or self._moved("orders") or self._moved("positions"):
            self._update_overlays()

    def show_series(self, key: SeriesKey) -> None:
        """Chart `key`: load its history in a worker and follow it live."""
        self.key = key
        self._set_picker("market-symbol", f"{key.exchange}|{key.symbol}")
        self._fill_timeframes(key.exchange, key.symbol)
        self._set_picker("market-timeframe", key.timeframe)
        self._status(f"loading {key.title}…")
        chart = self.query_one(CandleChart)
        chart.show(CandleSeries(key.timeframe), key.title)
        self._closed_upto = None
        self.run_worker(self._load(key), group="history", exclusive=True, exit_on_error=False)
        self.run_worker(self._tail_trades(key), group="trades", exclusive=True, exit_on_error=False)

    def show_signal(self, exchange: str, symbol: str, timeframe: str, time: datetime) -> None:
        """Jump the chart to the candle of a signal, switching series first if needed.

        A signal of a timeframe the store does not hold is shown on a held series of its symbol
        (the one on show, if it is of that symbol).
        """
        key = SeriesKey(exchange, symbol, timeframe)
        held = [k for k in self.keys if (k.exchange, k.symbol) == (exchange, symbol)]
        if key not in self.keys and held:
            key = self.key if self.key in held and self.key is not None else held[0]
        if key != self.key:
            self._pending_jump = time
            self.show_series(key)
        elif not self.query_one(CandleChart).jump_to(time):
            self._pending_jump = time

    # --- workers and their messages -------------------------------------------------------------

    async def _load(self, key: SeriesKey) -> None:
        try:
            answer = await self.source.candles(key.exchange, key.symbol, key.timeframe,
                                               limit=HISTORY)  # fmt: skip
        except Exception as exc:  # any failure is shown on the screen; the feed keeps running
            self.post_message(self.HistoryLoaded(key, [], str(exc) or type(exc).__name__))
            return
        self.post_message(self.HistoryLoaded(key, [mv.bar_from_rest(c) for c in answer.candles]))

    async def _tail_trades(self, key: SeriesKey) -> None:
        """Follow `market.trade` of the charted symbol on the gateway's /ws (the app's feed leaves
        trades off; this subscription lives only while the Market screen shows a series)."""
        url, token = getattr(self.source, "url", None), getattr(self.source, "token", None)
        if not isinstance(url, str):
            return  # a history source with no gateway behind it: closed candles only

        def batch(events: list[Envelope[Any]]) -> None:
            trades = [(float(t.price), float(t.amount), t.time) for t in
                      (e.payload for e in events) if isinstance(t, TradeExecuted)
                      and (t.exchange, t.symbol) == (key.exchange, key.symbol)]  # fmt: skip
            if trades:
                self.post_message(self.TradesReceived(key, trades))

        feed = LiveFeed(url, token if isinstance(token, str) else None, batch,
                        lambda _link: None, channels=("market.trade",), batch_s=0.1)  # fmt: skip
        await feed.run()

    @on(TradesReceived)
    def _trades_received(self, message: TradesReceived) -> None:
        if message.key == self.key:
            self.query_one(CandleChart).apply_trades(message.trades)

    @on(HistoryLoaded)
    def _history_loaded(self, message: HistoryLoaded) -> None:
        if message.key != self.key:
            return  # the user picked another series meanwhile
        chart = self.query_one(CandleChart)
        if message.error is not None:
            self._status(f"history of {message.key.title} failed: {message.error}")
            return
        series = CandleSeries(message.key.timeframe, message.bars)
        for bar in mv.live_bars(self.state.candles.get(self._state_key(), ()), message.key):
            series.upsert(bar)
        chart.show(series, message.key.title)
        self._closed_upto = series.bars[-1].time if series.bars else None
        self._update_overlays()
        self._status(f"{len(series.bars)} candles" if series.bars else "no candles yet")
        if self._pending_jump is not None and chart.jump_to(self._pending_jump):
            self._pending_jump = None

    # --- pickers --------------------------------------------------------------------------------

    @on(Select.Changed, "#market-symbol")
    def _symbol_picked(self, event: Select.Changed) -> None:
        if not isinstance(event.value, str):
            return
        exchange, symbol = event.value.split("|", 1)
        if self.key is not None and (self.key.exchange, self.key.symbol) == (exchange, symbol):
            return
        timeframes = self._fill_timeframes(exchange, symbol)
        keep = self.key.timeframe if self.key and self.key.timeframe in timeframes else None
        if timeframes:
            self.show_series(SeriesKey(exchange, symbol, keep or timeframes[0]))

    @on(Select.Changed, "#market-timeframe")
    def _timeframe_picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and self.key and event.value != self.key.timeframe:
            self.show_series(SeriesKey(self.key.exchange, self.key.symbol, event.value))

    def action_pick(self, picker: str) -> None:
        """Open a picker."""
        select = self.query_one(f"#{picker}", Select)
        select.focus()
        select.expanded = True

    def action_chart(self) -> None:
        """Give the chart the keys again."""
        self.query_one(CandleChart).focus()

    async def action_chart_key(self, action: str) -> None:
        """Run one of the chart's key actions on it (e.g. `zoom(1)`)."""
        await self.app.run_action(action, self.query_one(CandleChart))

    def _update_pickers(self) -> None:
        keys = mv.series_keys(self.state.series)
        if keys == self.keys:
            return
        self.keys = keys
        symbols = sorted({(k.exchange, k.symbol) for k in keys})
        options = [(f"{s} ({e})", f"{e}|{s}") for e, s in symbols]
        self.query_one("#market-symbol", Select).set_options(options)
        if not keys:
            self._status("the provider holds no candles yet: start a replay or a connector")
            return
        if self.key is None:
            self.show_series(keys[0])
        else:
            self._set_picker("market-symbol", f"{self.key.exchange}|{self.key.symbol}")
            self._fill_timeframes(self.key.exchange, self.key.symbol)
            self._set_picker("market-timeframe", self.key.timeframe)

    def _fill_timeframes(self, exchange: str, symbol: str) -> list[str]:
        held = [k.timeframe for k in self.keys if (k.exchange, k.symbol) == (exchange, symbol)]
        if self.key and (self.key.exchange, self.key.symbol) == (exchange, symbol):
            held = sorted({*held, self.key.timeframe})
        select = self.query_one("#market-timeframe", Select)
        select.set_options([(tf, tf) for tf in held])
        return held

    def _set_picker(self, picker: str, value: str) -> None:
        select = self.query_one(f"#{picker}", Select)
        with self.prevent(Select.Changed):
            try:
                select.value = value
            except Exception:  # InvalidSelectValueError: not among the options (yet)
                return

    # --- live state -----------------------------------------------------------------------------

    def _moved(self, section: str) -> bool:
        version = self.state.versions[section]
        if self._seen.get(section) == version:
            return False
        self._seen[section] = version
        return True

    def _state_key(self) -> tuple[str, str, str]:
        assert self.key is not None
        return (self.key.exchange, self.key.symbol, self.key.timeframe)

    def _take_live_candles(self) -> None:
        chart = self.query_one(CandleChart)
        held = self.state.candles.get(self._state_key())
        if not held or chart.series is None:
            return
        fresh = []
        for candle in reversed(held):  # newest first, down to the last closed one drawn
            if self._closed_upto is not None and candle.open_time < self._closed_upto:
                break
            fresh.append(mv.bar_from_event(candle))
        for bar in reversed(fresh):
            chart.add_bar(bar)  # replaces a forming candle of the same open time
        if fresh:
            self._closed_upto = fresh[0].time

    def _update_overlays(self) -> None:
        assert self.key is not None
        state = self.state
        marks = mv.markers(self.key, state.signals, state.fills)
        lines = mv.levels(self.key, state.orders.values(), mv.open_symbols(state.positions))
        self.query_one(CandleChart).set_overlays(marks, lines)

    def _status(self, text: str) -> None:
        self.query_one("#market-status", Static).update(text)
