"""The typed config section of each role: `[provider]`, `[detector]`, `[webhooks]`, `[gateway]`.

Each section is a frozen model validated when the settings load, so a typo in `bfx.toml` is caught
by `bfx config show` and at the start of any command, not when the role reaches that code. The
defaults live here and only here: CLI options default to "not given" and override a section's
values through `with_overrides`, which validates again and names the option that is wrong.

They sit in `runtime/` (not in each role) because `Settings` holds them and every role reads
its own section from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

from barfinex_cli.errors import UsageError

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """A frozen config section that rejects unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def with_overrides(self, where: str = "option", **overrides: Any) -> Self:
        """Return this section with the given values replaced (None means "not given").

        A value the model rejects raises `UsageError` naming the option, e.g.
        `--port: Input should be less than or equal to 65535`.
        """
        from pydantic import ValidationError

        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        try:
            return self.model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "?"
            flag = "--" + name.removesuffix("_s").replace("_", "-") if where == "option" else name
            raise UsageError(f"{flag}: {first['msg']} (got {given.get(name)!r})") from None


class ProviderConfig(Section):
    """How the provider runs: `[provider]` in bfx.toml, or `bfx provider start` options."""

    exchange: str | None = Field(None, description="live ccxt exchange id; None replays")
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    replay: Path | None = Field(None, description="replay file or folder; None is synthetic")
    speed: float | None = Field(60.0, gt=0, description="replay speed; None is as fast as possible")
    history: int = Field(720, ge=0, description="replay: base candles kept as history")
    days: float = Field(7.0, gt=0, le=3650, description="synthetic replay: days of market to make")
    paper: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    serve: bool = Field(True, description="serve the gateway on host:port (off: in-process only)")
    record: bool = True
    health_interval_s: float = Field(5.0, gt=0)
    exit_at_end: bool = False
    mcp_orders: bool = False
    integrity_interval_s: float = Field(60.0, gt=0, description="seconds between integrity scans")
    clock: Literal["auto", "wall", "market"] = Field(
        "auto", description="auto: market time for a replay, wall time for a live exchange"
    )
    wait_for_apps: int = Field(
        0, ge=0, le=1000, description="replay: hold the live part until this many apps registered"
    )
    lockstep: bool = Field(
        False,
        description="replay: play each market moment only once every role's consumer group "
        "has handled the last (bfx up turns it on; see docs/backtest.md, Parity)",
    )
    lockstep_ignore: tuple[str, ...] = Field(
        ("recorder",), description="consumer groups a lock-step replay does not wait for"
    )
    lockstep_timeout_s: float = Field(
        30.0, gt=0, description="lock-step: the longest wait for one moment before moving on"
    )
    max_candle_ahead_s: float | None = Field(
        None,
        gt=0,
        description="refuse a candle closing this far past the wall clock (live) or the last "
        "close of its series (replay); None: 3 timeframes live, max(30 days, 100 timeframes) "
        "in a replay",
    )

    @property
    def replays(self) -> bool:
        """Tell whether this provider replays (no live exchange)."""
        return not self.exchange

    @property
    def clock_kind(self) -> Literal["wall", "market"]:
        """Return the clock this provider runs on."""
        if self.clock != "auto":
            return self.clock
        return "market" if self.replays else "wall"


class DetectorConfig(Section):
    """How a detector instance runs: `[detector]` in bfx.toml, or `bfx detector run` options."""

    strategy: Path | None = None
    instance: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    exchange: str | None = None
    provider_url: str | None = Field(None, description="None: the global provider_url")
    host: str = "127.0.0.1"
    port: int = Field(8101, ge=0, le=65535)
    serve_health: bool = Field(True, description="serve /health and /metrics on host:port")
    metrics_interval_s: float = Field(30.0, gt=0)
    heartbeat_s: float = Field(5.0, gt=0)
    join_registry: bool = True
    clock: Literal["auto", "wall", "market"] = Field(
        "auto", description="auto: follow the provider's clock (market time when it replays)"
    )


class WebhookTarget(Section):
    """One receiver: where to POST, which event types, and the secret that signs its bodies."""

    url: AnyHttpUrl
    types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    secret: SecretStr | None = None


class WebhooksConfig(Section):
    """Every webhook target with the retry policy they share."""

    targets: list[WebhookTarget] = Field(default_factory=list)
    secret: SecretStr | None = None
    """The signing secret of targets that have none of their own."""
    attempts: int = Field(5, ge=1, le=20)
    backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)
    queue_size: int = Field(1000, ge=1)
    drain_s: float = Field(5.0, ge=0)
    """How long queued deliveries may take at shutdown before the rest is dead-lettered."""

    @model_validator(mode="after")
    def _every_target_signed(self) -> Self:
        for target in self.targets:
            if target.secret is None and self.secret is None:
                raise ValueError(
                    f"webhook {target.url} has no secret and no shared secret is set "
                    "(set BFX_WEBHOOK_SECRET)"
                )
        return self

    def secret_of(self, target: WebhookTarget) -> bytes:
        """Return the key that signs bodies sent to `target`."""
        secret = target.secret or self.secret
        assert secret is not None  # the validator guarantees one
        return secret.get_secret_value().encode()


class GatewayConfig(Section):
    """What the provider's gateway accepts: `[gateway]` in bfx.toml (see docs/gateway.md)."""

    max_body_bytes: int = Field(1_048_576, ge=1, le=1 << 30, description="request body cap")
    allowed_app_hosts: tuple[str, ...] = Field(
        ("127.0.0.1", "localhost", "::1"),
        min_length=1,
        description="hosts an app may register a URL on (the proxy forwards only there)",
    )

    @model_validator(mode="after")
    def _plain_hosts(self) -> Self:
        for host in self.allowed_app_hosts:
            if not host or any(c in host for c in "/@?#[] ") or host.count(":") == 1:
                raise ValueError(
                    f"allowed_app_hosts: {host!r} is not a bare host name or IP "
                    "(no scheme, port or brackets: e.g. '127.0.0.1', 'localhost', '::1')"
                )
        return self


class AdvisorConfig(Section):
    """How the advisor runs and decides: `[advisor]` in bfx.toml, or `bfx advisor run` options.

    See docs/advisor.md for what each bound does in the pipeline.
    """

    instance: str = Field("advisor", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    consumer: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="name in the instance's consumer group and the registry (one per host when "
        "advisors on several hosts share the signals); None: the instance",
    )
    provider_url: str | None = Field(None, description="None: the global provider_url")
    host: str = "127.0.0.1"
    port: int = Field(8009, ge=0, le=65535)
    serve_api: bool = Field(True, description="serve /health, /metrics and the REST API")
    heartbeat_s: float = Field(5.0, gt=0)
    join_registry: bool = True
    clock: Literal["auto", "wall", "market"] = "auto"
    warmup: int = Field(300, ge=20, le=5000, description="candles per series read at warm-up")
    retry_s: float = Field(2.0, gt=0, description="wait before retrying a pending signal")
    context_wait_s: float = Field(
        5.0, ge=0, description="how long a signal may wait for the candles under it to arrive"
    )
    model: Path | None = Field(None, description="trained model file; None: the rule scorer")
    min_quality: float = Field(0.6, ge=0, le=1, description="quality gate threshold (0..1)")
    max_staleness: int = Field(3, ge=0, description="candles the context may lag the signal")
    max_signal_age_s: float = Field(3600.0, gt=0, description="older signals are dropped")
    detector_weight: float = Field(0.4, ge=0, le=1, description="conviction: detector share")
    min_conviction: float = Field(0.0, ge=0, le=1, description="calibrated conviction floor")
    max_spread_pct: float = Field(0.4, gt=0, description="validation: widest spread, percent")
    min_risk_reward: float = Field(1.2, gt=0, description="validation: lowest reward/risk")
    atr_period: int = Field(14, ge=2, le=500)
    stop_atr: float = Field(1.5, gt=0, description="stop distance in ATRs")
    take_profit_atr: float = Field(2.5, gt=0, description="take-profit distance in ATRs")
    risk_fraction: float = Field(0.01, gt=0, le=1, description="equity risked per trade")
    max_position_fraction: float = Field(0.25, gt=0, le=10, description="notional cap / equity")
    default_equity: float = Field(10_000.0, gt=0, description="equity when no balance is seen")
    reduce_fraction: float = Field(
        0.5, gt=0, le=1, description="share of the held position a reduce signal takes off"
    )
    llm_models: tuple[str, ...] = Field((), description="litellm model names, tried in order")
    llm_api_base: str | None = Field(None, description="OpenAI-compatible server URL")
    llm_api_key: SecretStr | None = Field(None, description="LLM key (env only)")
    llm_timeout_s: float = Field(20.0, gt=0)
    llm_retries: int = Field(1, ge=0, le=5, description="extra tries per model")
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_tolerance_pct: float = Field(
        1.0, ge=0, le=50, description="hallucination check: how far a cited number may stray"
    )
    recent: int = Field(500, ge=1, le=100_000, description="decisions kept for the REST API")


class InspectorConfig(Section):
    """How the inspector runs: `[inspector]` in bfx.toml, or `bfx inspector run` options.

    See docs/inspector.md; the risk rules themselves live in the policy file (`policy`).
    """

    instance: str = Field("inspector", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider_url: str | None = Field(None, description="None: the global provider_url")
    policy: Path | None = Field(None, description="policy TOML; None: the packaged default")
    account: str = Field("paper", min_length=1, max_length=64, description="account it trades")
    currency: str = Field("USDT", min_length=1, description="the account's equity currency")
    host: str = "127.0.0.1"
    port: int = Field(8008, ge=0, le=65535)
    serve_api: bool = Field(True, description="serve /health, /metrics, /kpi, /positions, ...")
    heartbeat_s: float = Field(5.0, gt=0)
    join_registry: bool = True
    clock: Literal["auto", "wall", "market"] = "auto"
    retry_s: float = Field(2.0, gt=0, description="wait before retrying pending decisions")
    kpi_interval_s: float = Field(30.0, gt=0, description="seconds between inspector.kpi")
    reconcile_interval_s: float = Field(30.0, gt=0, description="seconds between reconciles")
    policy_poll_s: float = Field(1.0, gt=0, description="how often the policy file is checked")
    divergence_order: Literal["alert", "adopt", "stand_down"] = "alert"
    divergence_position: Literal["alert", "adopt", "stand_down"] = "alert"
    divergence_balance: Literal["alert", "adopt", "stand_down"] = "alert"
    trailing_stop_pct: float | None = Field(
        None, gt=0, lt=100, description="trail the stop this % behind the best price"
    )
    breakeven_at_r: float | None = Field(
        None, gt=0, description="move the stop to entry once price went this many risks"
    )
    telegram_api: str = Field("https://api.telegram.org", description="Telegram Bot API base URL")
