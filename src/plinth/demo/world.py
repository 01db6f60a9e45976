"""The demo's generated churn world: customers observed weekly, each with a true churn
probability the demo's models try to learn, and a later shift in behaviour and in what
makes customers leave (the drift the monitor must catch).

Everything is drawn from one seed, so a run can be repeated figure for figure. Churn is
not linear in the features (an interaction of high spend and few logins), which is what a
tree model can learn and a linear one cannot: the A/B test measures that difference in
renewals, not in a number written down here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

FEATURES = ["tenure_months", "monthly_spend", "support_calls_30d", "logins_30d"]
LABEL = "churned"
KEY = "customer_id"
WEEK = timedelta(days=7)
#: how long after a snapshot its customers' churn is known (the label's timestamp)
LABEL_DELAY = timedelta(days=3)
#: a retention offer keeps this share of the customers who would otherwise leave
OFFER_SAVES = 0.7


@dataclass
class World:
    """``customers`` ids 1..n; ``snapshots[k]`` the features of every customer at week
    ``k`` (``event_time``), oldest first; ``drifted`` one more week after the shift."""

    seed: int
    customers: int
    now: datetime
    snapshots: list[pd.DataFrame]
    drifted: pd.DataFrame

    @property
    def history(self) -> pd.DataFrame:
        return pd.concat(self.snapshots, ignore_index=True)


def make_world(seed: int, customers: int = 2_000, weeks: int = 4) -> World:
    """``weeks`` weekly snapshots ending three weeks before ``now``, then the drifted week."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now(tz="UTC").floor("h").to_pydatetime()
    ids = np.arange(1, customers + 1, dtype="int64")
    tenure = rng.integers(1, 72, customers).astype("float64")
    spend = rng.gamma(4.0, 15.0, customers)
    calls = rng.poisson(1.5, customers).astype("float64")
    logins = rng.poisson(9.0, customers).astype("float64")
    snapshots = []
    first = now - (weeks + 2) * WEEK
    for k in range(weeks):
        snapshots.append(_frame(ids, first + k * WEEK, tenure + k / 4, spend, calls, logins))
        spend = np.clip(spend + rng.normal(0, 4.0, customers), 5, None)
        calls = rng.poisson(1.5, customers).astype("float64")
        logins = np.clip(logins + rng.normal(0, 1.5, customers), 0, None).round()
    # the shift: a rival's offer - more support calls, fewer logins, and price now matters
    drifted = _frame(
        ids,
        now - WEEK,
        tenure + weeks / 4,
        spend * 1.25,
        rng.poisson(3.5, customers).astype("float64"),
        np.clip(logins - rng.poisson(3.0, customers), 0, None),
    )
    return World(seed, customers, now, snapshots, drifted)


def _frame(
    ids: np.ndarray,
    at: datetime,
    tenure: np.ndarray,
    spend: np.ndarray,
    calls: np.ndarray,
    logins: np.ndarray,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            KEY: ids,
            "event_time": pd.Series([at] * len(ids)).astype("datetime64[us, UTC]"),
            "tenure_months": tenure.astype("float64"),
            "monthly_spend": spend.round(2),
            "support_calls_30d": calls,
            "logins_30d": logins,
        }
    )


def churn_probability(frame: pd.DataFrame, shifted: bool = False) -> np.ndarray:
    """The true probability that each customer leaves within the month."""
    # two opposite corners: paying much and rarely logging in, or paying little and
    # logging in a lot (shopping around); a linear model sees them cancel out
    disengaged = ((frame.monthly_spend > 60) & (frame.logins_30d < 8)) | (
        (frame.monthly_spend < 40) & (frame.logins_30d > 10)
    )
    z = -2.0 + 0.6 * (frame.support_calls_30d - 1.5) + 3.5 * disengaged - 0.03 * frame.tenure_months
    if shifted:  # after the shift, expensive plans leave for the rival
        z = z + 0.04 * (frame.monthly_spend - 75) - 0.8 * disengaged
    return np.asarray(1 / (1 + np.exp(-z)), dtype="float64")


def labels(frame: pd.DataFrame, seed: int, shifted: bool = False) -> np.ndarray:
    draw = np.random.default_rng(seed).random(len(frame))
    return (draw < churn_probability(frame, shifted)).astype("int64")


def spine(world: World, snapshots: range | list[int]) -> pd.DataFrame:
    """Label rows (key, time, churned) for the given snapshots: each label is known
    ``LABEL_DELAY`` after its snapshot, so a point-in-time join must read that snapshot."""
    parts = []
    for k in snapshots:
        frame = world.snapshots[k]
        parts.append(
            pd.DataFrame(
                {
                    KEY: frame[KEY],
                    "event_timestamp": frame.event_time + LABEL_DELAY,
                    LABEL: labels(frame, world.seed * 100 + k),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def drifted_labels(world: World) -> np.ndarray:
    """Whether each customer of the drifted week churned (known ``LABEL_DELAY`` later)."""
    return labels(world.drifted, world.seed * 100 + 99, shifted=True)


def drifted_split(world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labels of the drifted week: a spine for retraining (odd customers) and a
    holdout of features and labels (even customers) that judges champion and challenger."""
    frame = world.drifted
    churned = drifted_labels(world)
    odd = (frame[KEY] % 2 == 1).to_numpy()
    train = pd.DataFrame(
        {
            KEY: frame[KEY][odd],
            "event_timestamp": (frame.event_time + LABEL_DELAY)[odd],
            LABEL: churned[odd],
        }
    ).reset_index(drop=True)
    holdout = frame.loc[~odd, FEATURES].assign(**{LABEL: churned[~odd]}).reset_index(drop=True)
    return train, holdout


def renewed(
    frame: pd.DataFrame, offered: np.ndarray, rng: np.random.Generator, shifted: bool = False
) -> np.ndarray:
    """Whether each customer renews: a customer flagged by the model gets a retention offer,
    which keeps ``OFFER_SAVES`` of those who would have left."""
    leave = churn_probability(frame, shifted) * np.where(offered, 1 - OFFER_SAVES, 1.0)
    return np.asarray(rng.random(len(frame)) >= leave)
