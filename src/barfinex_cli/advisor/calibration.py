"""Calibrators that turn a raw win probability into one that comes true as often as it says.

A model's 0.7 is rarely right 70% of the time, and how wrong it is changes with the regime, so
training fits one calibrator per regime (`CalibrationSet`), on signals the model did not train on:

- **Platt**: a logistic regression on the raw probability's log-odds, p' = sigmoid(a * logit(p) +
  b) — two numbers, smooth, good with few samples (a = 1, b = 0 is the identity);
- **isotonic**: a non-decreasing step-line through the samples, evaluated with `np.interp` over the
  fitted thresholds — any monotone distortion, but it needs more samples.

Both are fitted with scikit-learn and applied from their fitted parameters, so a signal costs a
`math.exp` (Platt) or one `np.interp` (isotonic), not an sklearn call. The models are pydantic, so
a model file holds them as plain numbers (see `advisor.models`).

The metrics the training report prints live here too: the Brier score, the log loss, a reliability
table (per probability bin: the mean predicted, the observed frequency, the count) and the expected
calibration error (the count-weighted mean gap of that table).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

Method = Literal["platt", "isotonic"]
EPS = 1e-6
"""Raw probabilities are clipped to [EPS, 1 - EPS] before their log-odds are taken."""
LOSS_EPS = 1e-15


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _logit(p: float) -> float:
    p = min(max(p, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class PlattCalibrator(_Frozen):
    """p' = sigmoid(a * logit(p) + b), fitted on `samples` signals."""

    method: Literal["platt"] = "platt"
    a: float
    b: float
    samples: int = Field(ge=0)

    def apply(self, p: float) -> float:
        """Return the calibrated probability of raw probability `p`, in [0, 1]."""
        return _sigmoid(self.a * _logit(p) + self.b)

    def apply_array(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return `apply` of every element of `p` (vectorised, for training and reports)."""
        q = np.clip(p, EPS, 1.0 - EPS)
        z = self.a * np.log(q / (1.0 - q)) + self.b
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    @property
    def version(self) -> str:
        """Return a short hash of the fitted parameters (equal parameters, equal version)."""
        return _digest(f"platt:{self.a!r}:{self.b!r}")


class IsotonicCalibrator(_Frozen):
    """A non-decreasing map through the points (x, y), linear between them, flat outside."""

    method: Literal["isotonic"] = "isotonic"
    x: tuple[float, ...] = Field(min_length=1)
    y: tuple[float, ...] = Field(min_length=1)
    samples: int = Field(ge=0)
    _xs: Any = PrivateAttr(default=None)
    _ys: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"isotonic x and y differ in length ({len(self.x)} != {len(self.y)})")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("isotonic x must be non-decreasing")
        self._xs = np.asarray(self.x, dtype=np.float64)
        self._ys = np.asarray(self.y, dtype=np.float64)

    def apply(self, p: float) -> float:
        """Return the calibrated probability of raw probability `p`, in [0, 1]."""
        return min(1.0, max(0.0, float(np.interp(p, self._xs, self._ys))))

    def apply_array(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return `apply` of every element of `p` (vectorised, for training and reports)."""
        return np.clip(np.interp(p, self._xs, self._ys), 0.0, 1.0)  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        # the cached arrays are derived from x and y; comparing them would ask numpy for a bool
        if not isinstance(other, IsotonicCalibrator):
            return NotImplemented
        return (self.x, self.y, self.samples) == (other.x, other.y, other.samples)

    def __hash__(self) -> int:
        return hash((self.x, self.y, self.samples))

    @property
    def version(self) -> str:
        """Return a short hash of the fitted parameters (equal parameters, equal version)."""
        return _digest(f"isotonic:{self.x!r}:{self.y!r}")


Calibrator = Annotated[PlattCalibrator | IsotonicCalibrator, Field(discriminator="method")]


class CalibrationSet(_Frozen):
    """One calibrator per regime, and a fallback fitted on every regime's signals together.

    A regime with too few signals (or only wins, or only losses) to fit gets no calibrator of its
    own; `for_regime` then answers with the fallback, and with None when there is none either.
    """

    by_regime: dict[str, Calibrator] = Field(default_factory=dict)
    fallback: Calibrator | None = None

    def for_regime(self, regime: str) -> PlattCalibrator | IsotonicCalibrator | None:
        """Return the calibrator to apply in `regime`, or None (apply none: identity)."""
        return self.by_regime.get(regime, self.fallback)


def fit_calibrator(
    method: Method, raw: ArrayLike, won: ArrayLike
) -> PlattCalibrator | IsotonicCalibrator:
    """Fit a calibrator of `method` mapping raw probabilities to outcomes (1 won, 0 lost).

    Raises:
        ValueError: fewer than 2 samples, or only one outcome among them.
    """
    p = np.asarray(raw, dtype=np.float64)
    y = np.asarray(won, dtype=np.float64)
    if p.size < 2 or y.min() == y.max():
        raise ValueError(f"{p.size} samples with one outcome only: nothing to calibrate against")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        z = np.log(np.clip(p, EPS, 1 - EPS) / (1 - np.clip(p, EPS, 1 - EPS))).reshape(-1, 1)
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
        return PlattCalibrator(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), samples=p.size)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return IsotonicCalibrator(
        x=tuple(iso.X_thresholds_.tolist()), y=tuple(iso.y_thresholds_.tolist()), samples=p.size
    )


class ReliabilityBin(_Frozen):
    """One probability bin of a reliability table."""

    low: float
    high: float
    mean_predicted: float
    observed: float
    count: int


def brier(won: ArrayLike, p: ArrayLike) -> float:
    """Return the Brier score: the mean squared gap between probability and outcome (0 is best)."""
    y, q = np.asarray(won, np.float64), np.asarray(p, np.float64)
    return float(np.mean((q - y) ** 2))


def log_loss(won: ArrayLike, p: ArrayLike) -> float:
    """Return the mean negative log-likelihood of the outcomes (probabilities clipped at 1e-15)."""
    y, q = np.asarray(won, np.float64), np.clip(np.asarray(p, np.float64), LOSS_EPS, 1 - LOSS_EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def reliability(won: ArrayLike, p: ArrayLike, bins: int = 10) -> tuple[ReliabilityBin, ...]:
    """Return the reliability table over `bins` equal-width bins of [0, 1] (empty bins left out)."""
    y, q = np.asarray(won, np.float64), np.asarray(p, np.float64)
    index = np.minimum((q * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if count:
            out.append(ReliabilityBin(
                low=b / bins, high=(b + 1) / bins, mean_predicted=float(q[mask].mean()),
                observed=float(y[mask].mean()), count=count,
            ))  # fmt: skip
    return tuple(out)


def ece(table: Sequence[ReliabilityBin]) -> float:
    """Return the expected calibration error of a reliability table (0 is perfect)."""
    total = sum(b.count for b in table)
    if not total:
        return 0.0
    return sum(b.count * abs(b.mean_predicted - b.observed) for b in table) / total


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
