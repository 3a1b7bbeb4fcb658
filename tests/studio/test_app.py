"""The studio app driven by a Pilot against a real provider replaying on loopback.

Each test runs the provider in its own event loop task and `StudioApp.run_test()` beside it; the
assertions read the widgets' cells, the header's text and the screen on show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Input, Static

from barfinex_cli.contracts.detector import RuleAttribution, SignalGenerated
from barfinex_cli.studio.app import StudioApp
from barfinex_cli.studio.header import StudioHeader
from barfinex_cli.studio.screens.dialogs import TokenScreen, TooSmallScreen, WaitingScreen
from barfinex_cli.studio.screens.market import MarketScreen
from barfinex_cli.studio.screens.signals import SignalsScreen
from ports import free_port
from studio.stack import TOKEN, running_provider, until

SIZE = (160, 48)
FEED = {"backoff_s": 0.05, "max_backoff_s": 0.2}


def cells(table: DataTable[Any]) -> list[list[str]]:
    """Return every row of a table as plain strings."""
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def header_text(app: StudioApp) -> str:
    return str(app.screen.query_one(StudioHeader).render())


def signal(score: float = 2.5) -> SignalGenerated:
    return SignalGenerated(
        strategy="momentum", instance="m1", exchange="synthetic", symbol="BTC/USDT",
        timeframe="1m", candle_time=datetime(2024, 1, 1, 0, 30, tzinfo=UTC), direction="long",
        score=score, threshold=2.0,
        attribution=[
            RuleAttribution(rule="above_ema", held=True, weight=1.5, direction="long",
                            values={"close": 42100.5, "ema": 42050.25}),
            RuleAttribution(rule="rsi_up", held=False, weight=1.0, direction="long",
                            values={"rsi": 48.0}),
        ],
    )  # fmt: skip


async def test_keys_one_to_six_switch_screens_and_the_header_shows_the_replay(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as run:
        app = StudioApp(run.url, TOKEN, poll_s=60, feed_options=FEED)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.state.connection.state == "connected")
            shown = {}
            for key in "234561":
                await pilot.press(key)
                await pilot.pause()
                shown[key] = type(app.screen).__name__
            assert shown == {
                "2": "SignalsScreen", "3": "DecisionsScreen", "4": "RiskScreen",
                "5": "CapitalScreen", "6": "ServicesScreen", "1": "MarketScreen",
            }  # fmt: skip
            await pilot.press("6")
            await until(lambda: "connected" in header_text(app))
            head = header_text(app)
            assert "replay" in head and "market 2024-01-01 01:1" in head and "wall" in head
            series = cells(app.screen.query_one("#series", DataTable))
            assert [r[:4] for r in series] == [
                ["synthetic", "BTC/USDT", "1m", "72"],
                ["synthetic", "BTC/USDT", "5m", "14"],
            ]
            line = str(app.screen.query_one("#missing", Static).render())
            assert "detector, advisor, inspector" in line


async def test_a_live_signal_shows_its_rules_and_enter_jumps_the_chart(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as run:
        app = StudioApp(run.url, TOKEN, poll_s=60, feed_options=FEED)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.state.connection.state == "connected")
            await pilot.press("2")
            await run.publish(signal())
            table = app.screen.query_one("#signals", DataTable)
            await until(lambda: table.row_count == 1)
            row = cells(table)[0]
            assert row[:5] == ["2024-01-01 00:30", "momentum", "m1", "BTC/USDT", "1m"]
            assert row[5].endswith("long") and row[6:] == ["2.50", "2.00"]
            rules = app.screen.query_one("#rules", DataTable)
            await until(lambda: rules.row_count == 2)
            assert cells(rules)[0] == [
                "above_ema",
                "✓",
                "1.5",
                "long",
                "close=4.21e+04, ema=4.205e+04",
            ]
            assert cells(rules)[1][:2] == ["rsi_up", "✗"]
            score = str(app.screen.query_one("#score", Static).render())
            assert "score 2.50 vs threshold 2.00" in score
            timeline = str(app.screen.query_one("#timelines", Static).render())
            assert timeline.startswith("momentum/m1") and "▲" in timeline
            table.focus()
            await pilot.press("enter")
            await until(lambda: isinstance(app.screen, MarketScreen))
            market = app.screen
            assert isinstance(market, MarketScreen)
            await until(lambda: market.key is not None and market.key.timeframe == "1m")


async def test_the_filter_keeps_only_matching_rows(tmp_path: Path, namespace: str) -> None:
    async with running_provider(tmp_path, namespace) as run:
        app = StudioApp(run.url, TOKEN, poll_s=60, feed_options=FEED)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.state.health is not None)
            await pilot.press("6")
            table = app.screen.query_one("#series", DataTable)
            await until(lambda: table.row_count == 2)
            await pilot.press("slash")
            assert isinstance(app.focused, Input)
            await pilot.press("5", "m")
            await until(lambda: table.row_count == 1)
            assert cells(table)[0][2] == "5m"
            await pilot.press("escape")
            await until(lambda: table.row_count == 2)


async def test_a_dropped_provider_shows_disconnected_and_the_studio_reconnects(
    tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    async with running_provider(tmp_path, namespace, port=port) as run:
        app = StudioApp(run.url, TOKEN, poll_s=60, feed_options=FEED)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.state.connection.state == "connected")
            await pilot.press("2")
            # leave the provider's block: it stops; the socket drops
            await run.provider_stop()
            await until(lambda: app.state.connection.state in ("disconnected", "connecting"))
            await until(lambda: "disconnected — retrying" in header_text(app))
            async with running_provider(tmp_path, namespace, port=port) as again:
                await until(lambda: app.state.connection.state == "connected", timeout=15)
                assert "● connected" in header_text(app)
                await again.publish(signal(3.0))
                table = app.screen.query_one("#signals", DataTable)
                await until(lambda: table.row_count == 1)
                assert cells(table)[0][6] == "3.00"
            assert app.feed is not None and app.feed.connects >= 2


async def test_a_wrong_token_opens_the_token_screen_and_a_typed_token_connects(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as run:
        app = StudioApp(run.url, "not-the-token", poll_s=60, feed_options=FEED)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: isinstance(app.screen, TokenScreen) and app.screen.query("#token"))
            text = " ".join(str(s.render()) for s in app.screen.query(Static))
            assert "refused the token" in text and "--token" in text and "BFX_TOKEN" in text
            await pilot.press("1")  # screens stay behind the token screen
            assert isinstance(app.screen, TokenScreen)
            app.screen.query_one("#token", Input).value = TOKEN
            await pilot.press("enter")
            await until(lambda: app.state.connection.state == "connected")
            assert not isinstance(app.screen, TokenScreen)


async def test_a_provider_that_is_down_gets_a_waiting_screen_until_it_starts(
    tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    app = StudioApp(f"http://127.0.0.1:{port}", TOKEN, poll_s=60, feed_options=FEED)
    async with app.run_test(size=SIZE):
        await until(lambda: isinstance(app.screen, WaitingScreen))
        why = str(app.screen.query_one("#why", Static).render())
        assert "not reachable" in why and "retrying in" in why
        async with running_provider(tmp_path, namespace, port=port):
            await until(lambda: app.state.connection.state == "connected", timeout=20)
            assert not isinstance(app.screen, WaitingScreen)


async def test_a_terminal_too_small_says_so_and_the_screen_returns_when_enlarged() -> None:
    app = StudioApp("http://127.0.0.1:9", TOKEN, connect=False)
    async with app.run_test(size=(60, 20)) as pilot:
        assert isinstance(app.screen, TooSmallScreen)
        text = str(app.screen.query_one("#too-small", Static).render())
        assert "Terminal too small: 60x20" in text and "80x24" in text
        await pilot.resize_terminal(120, 40)
        await until(lambda: not isinstance(app.screen, TooSmallScreen))
        assert isinstance(app.screen, MarketScreen)
        await pilot.press("2")
        assert isinstance(app.screen, SignalsScreen)


async def test_the_command_palette_and_help_reach_the_screens() -> None:
    app = StudioApp("http://127.0.0.1:9", TOKEN, connect=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"show capital")
        await pilot.press("enter")
        await until(lambda: type(app.screen).__name__ == "CapitalScreen")
        await pilot.press("question_mark")
        await until(lambda: type(app.screen).__name__ == "HelpScreen")
        text = " ".join(str(s.render()) for s in app.screen.query(Static))
        assert "stand the inspector down" in text and "6 Services" in text
        await pilot.press("escape")
        await until(lambda: type(app.screen).__name__ == "CapitalScreen")
        line = str(app.screen.query_one("#missing", Static).render())
        assert line.startswith("not running: inspector")


def test_timers_firing_while_the_app_closes_draw_nothing() -> None:
    """The header's clock tick and the market screen's redraw are timers; one that fires after
    the screens are gone (the app closing) must not ask for a screen (textual's
    ScreenStackError, seen as flaky failures of the studio tests)."""
    app = StudioApp(f"http://127.0.0.1:{free_port()}", TOKEN, poll_s=60, feed_options=FEED)
    assert not app.screen_stack
    app._flush_market()
    app._tick()
