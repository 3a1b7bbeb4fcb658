"""Field types shared by every contract: UTC timestamps and the frozen, strict model base."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware datetime, normalised to UTC; naive datetimes are rejected."""


class Model(BaseModel):
    """Base of every contract model: immutable, unknown fields rejected, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Payload(Model):
    """Base of every event payload; `event_type` is the bus type it travels under."""

    event_type: ClassVar[str]
