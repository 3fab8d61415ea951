"""What every scheduled job's settings share: enabled, interval, jitter, timeout."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from exporter.config_types import Duration, PositiveDuration


def _finite_days(value: float) -> float:
    if not math.isfinite(value) or value > 36500:
        raise ValueError(f"must be a finite number of days up to 36500, got {value!r}")
    return value


Days = Annotated[float, Field(gt=0), AfterValidator(_finite_days)]


class SettingsModel(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not show a password or a URL.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


_INTERVAL_DOC = "Time between the starts of two runs, e.g. 30s, 5m, 1h."
_JITTER_DOC = (
    "A random delay of 0..jitter added to every start (also to the first one after startup), "
    "so several exporters do not hit the DB at the same moment."
)
_TIMEOUT_DOC = (
    "A run still going after this long is cancelled and counted as an error; the next run starts at the next interval."
)


def interval_field(default: timedelta) -> timedelta:
    return Field(default=default, description=_INTERVAL_DOC)


def jitter_field(default: timedelta) -> timedelta:
    return Field(default=default, description=_JITTER_DOC)


def timeout_field(default: timedelta) -> timedelta:
    return Field(default=default, description=_TIMEOUT_DOC)


class JobSettings(SettingsModel):
    enabled: bool = Field(default=False, description="Run this job inside the daemon.")
    interval: PositiveDuration = Field(description=_INTERVAL_DOC)
    jitter: Duration = Field(description=_JITTER_DOC)
    timeout: PositiveDuration = Field(description=_TIMEOUT_DOC)
