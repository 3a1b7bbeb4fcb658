"""Read the time column of a market file, whatever way the file writes its times.

Exports put times in many forms: epoch seconds, milliseconds or microseconds (told apart by
magnitude, row by row, since some dumps mix them), ISO 8601, and local habits such as
CryptoDataDownload's `2019-10-17 09-AM`, `17.10.2019 09:00` or `10/17/2019 09:00 PM`. The form is
detected once per column from a sample and then applied to every row, so one column is never read
two ways. Day/month against month/day is decided by the data; when the data cannot decide (every
day is 12 or less) the caller is asked for `--time-format`, never guessed. A user's format is
Python strftime; polars parses with chrono, so the few directives that differ are translated here.

Times without an offset are UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from barfinex_cli.errors import UsageError

_SAMPLE = 1_000

ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
_DATES = ("%Y-%m-%d", "%d.%m.%Y", "%Y.%m.%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y")
_CLOCKS = ("%H:%M:%S", "%H:%M", "%I:%M:%S %p", "%I:%M %p", "%I-%p", "%I %p")
KNOWN_FORMATS: tuple[str, ...] = tuple(
    f"{date} {clock}".strip() for date in _DATES for clock in (*_CLOCKS, "")
)
"""Forms tried after epoch numbers and ISO 8601, in this order."""

EPOCH_OR_ISO = "epoch s/ms/µs or ISO 8601"


@dataclass(frozen=True, slots=True)
class TimeColumn:
    """A time column read as UTC epoch milliseconds (null where a row could not be read)."""

    ms: pl.Series
    form: str
    """How the column was read: `epoch`, `ISO 8601`, or the strftime format used."""
    failure: str
    """The reason a row is rejected, with `{}` where its raw text goes."""


def read_times(table: pl.DataFrame, col: str, time_format: str | None = None) -> TimeColumn:
    """Return `table[col]` as epoch milliseconds, reading it with `time_format` if one is given.

    Raises:
        UsageError: the format is not a strftime format, or the column reads equally well as
            day/month and month/day with different results.
    """
    if time_format is not None:
        return _with_format(table, col, time_format)
    numeric = _epoch(table, col)
    failure = (
        "timestamp '{}' is neither epoch s/ms/µs, ISO 8601 nor a date form bfx knows; "
        "give --time-format (strftime, e.g. '%d.%m.%Y %H:%M')"
    )
    if numeric.null_count() == table[col].null_count():
        return TimeColumn(numeric, "epoch", failure)  # all numbers: skip the costly date parse
    rest = table.filter(pl.col(col).is_not_null() & numeric.is_null())[col]
    sample = rest.head(_SAMPLE)
    iso = _iso(sample)
    if iso.null_count() == 0:
        form, parsed = "ISO 8601", _iso(table[col])
    else:
        form = _best_format(sample, rest, iso.len() - iso.null_count())
        parsed = _iso(table[col]) if form == "ISO 8601" else _strptime(table[col], form)
    return TimeColumn(numeric.fill_null(parsed).alias("time_ms"), form, failure)


def _epoch(table: pl.DataFrame, col: str) -> pl.Series:
    """Epoch s/ms/µs/ns (told apart by magnitude), null where the text is not a number."""
    text = pl.col(col)
    whole = text.cast(pl.Int64, strict=False)
    by_int = (
        pl.when(whole.abs() >= 10**17)
        .then(whole // 1_000_000)
        .when(whole.abs() >= 10**14)
        .then(whole // 1_000)
        .when(whole.abs() >= 10**11)
        .then(whole)
        .otherwise(whole * 1_000)
    )
    frac = text.cast(pl.Float64, strict=False)
    by_float = (pl.when(frac.abs() < 1e11).then(frac * 1000).otherwise(frac)).floor()
    return (
        table.select(pl.coalesce(by_int, by_float.cast(pl.Int64, strict=False)))
        .to_series()
        .alias("time_ms")
    )


def _iso(text: pl.Series) -> pl.Series:
    iso_text = text.str.replace(" ", "T").str.replace(r"Z$", "+00:00")
    parsed = [
        iso_text.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="ms")
        for f in ISO_FORMATS
    ]
    return pl.select(pl.coalesce(parsed)).to_series().dt.epoch("ms")


def _best_format(sample: pl.Series, rest: pl.Series, iso_hits: int) -> str:
    """Return the form that reads most of the sample; ask for a format when two disagree."""
    scores = {f: _strptime(sample, f) for f in KNOWN_FORMATS}
    best = max(scores.values(), key=lambda s: s.len() - s.null_count())
    hits = best.len() - best.null_count()
    if hits <= iso_hits:
        return "ISO 8601"  # nothing reads more rows; rows ISO cannot read are rejected
    tied = [f for f, s in scores.items() if s.len() - s.null_count() == hits]
    if len(tied) > 1:
        # decide on every row, not only the sample: a later day above 12 settles d/m vs m/d
        full = {f: _strptime(rest, f) for f in tied}
        top = max(s.len() - s.null_count() for s in full.values())
        tied = [f for f, s in full.items() if s.len() - s.null_count() == top]
        if len({tuple(full[f].to_list()) for f in tied}) > 1:
            example = rest[0]
            shown = " or ".join(f"'{f}'" for f in tied)
            raise UsageError(
                f"times like {example!r} read as more than one date form; give --time-format "
                f"{shown}"
            )
    return tied[0]


def check_format(time_format: str) -> None:
    """Raise `UsageError` unless `time_format` holds a strftime directive."""
    if not re.search(r"%[a-zA-Z]", time_format):
        raise UsageError(
            f"--time-format {time_format!r} has no strftime directive; write it like "
            "'%d.%m.%Y %H:%M' or '%Y-%m-%d %I-%p'"
        )


def _with_format(table: pl.DataFrame, col: str, time_format: str) -> TimeColumn:
    check_format(time_format)
    ms = _strptime(table[col], time_format).alias("time_ms")
    return TimeColumn(
        ms, time_format, f"timestamp '{{}}' does not match --time-format '{time_format}'"
    )


def _strptime(text: pl.Series, fmt: str) -> pl.Series:
    """Parse with a Python strftime format; null where a row does not match."""
    chrono = re.sub(r"\.%f", "%.f", fmt).replace("%f", "%6f")
    if re.search("%[HI]", chrono) and "%M" not in chrono:
        # chrono wants a minute whenever there is an hour (`09-AM`): supply minute zero
        chrono, text = chrono + "\x1f%M", text + "\x1f00"
    try:
        parsed = text.str.to_datetime(chrono, strict=False, time_zone="UTC", time_unit="ms")
    except pl.exceptions.PolarsError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UsageError(f"time format {fmt!r} cannot be used: {reason}") from None
    return parsed.dt.epoch("ms")
