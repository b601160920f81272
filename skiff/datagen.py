"""Demo data: realistic tables with a known causal structure, made on the machine (no downloads).

* :func:`churn` — a telecom customer table with the columns of the IBM telco churn data set and the
  same shape of signal: month-to-month contracts, fiber optic internet, electronic checks, short tenure
  and missing tech support or online security raise churn; ``TotalCharges`` is about tenure times
  ``MonthlyCharges``. About 26% churn; a good model reaches a ROC-AUC around 0.84, like the real data.
* :func:`dirty` — the same table as a raw CSV export has it: all text, Yes/No flags, blank
  ``TotalCharges`` for new customers, duplicated rows, numbers with stray spaces, out-of-range values.
* :func:`housing` — a California-housing-like regression table (block groups with income, age,
  rooms, location and ocean proximity; target ``median_house_value``, capped like the census data).

The specs that describe them are ``examples/churn.yaml`` and ``examples/housing.yaml``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["churn", "dirty", "housing", "CHURN_COLUMNS", "HOUSING_COLUMNS"]

CHURN_COLUMNS = [
    "customerID",
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    "Churn",
    "event_timestamp",
]
HOUSING_COLUMNS = [
    "block_id",
    "event_timestamp",
    "median_income",
    "house_age",
    "rooms",
    "bedrooms",
    "population",
    "occupancy",
    "latitude",
    "longitude",
    "ocean_proximity",
    "median_house_value",
]

#: The day the demo snapshots are taken; event timestamps fall in the 90 days before it.
SNAPSHOT = pd.Timestamp("2024-06-30", tz="UTC")


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def _timestamps(rng: np.random.Generator, n: int, days: int = 90) -> pd.Series:
    seconds = rng.integers(0, days * 86_400, size=n)
    return pd.Series(SNAPSHOT - pd.to_timedelta(seconds, unit="s")).dt.floor("s")


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    """IBM-style customer ids, e.g. 7590-VHVEG: four digits, a dash, five capitals; all unique."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    digits = rng.permutation(10_000)[: min(n, 10_000)]
    out: set[str] = set()
    ids: list[str] = []
    while len(ids) < n:
        num = digits[len(ids) % len(digits)]
        cand = f"{num:04d}-{''.join(rng.choice(letters, 5))}"
        if cand not in out:
            out.add(cand)
            ids.append(cand)
    return ids


def churn(n: int = 7043, seed: int = 0) -> pd.DataFrame:
    """A clean, typed telecom churn table (flags as bool, charges as float, ``event_timestamp`` UTC).

    The ``event_timestamp`` is when the row was observed (within 90 days before 2024-06-30); customers
    with ``tenure`` 0 signed up this month and have ``TotalCharges`` 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    u = rng.random

    senior = (u(n) < 0.162).astype(int)
    partner = u(n) < 0.48
    dependents = u(n) < np.where(partner, 0.52, 0.10)
    gender = np.where(u(n) < 0.505, "Male", "Female")

    contract = rng.choice(["Month-to-month", "One year", "Two year"], size=n, p=[0.55, 0.21, 0.24])
    mtm, two = contract == "Month-to-month", contract == "Two year"
    tenure = np.where(
        mtm,
        np.ceil(rng.exponential(17.0, n)),
        np.where(two, np.round(72 * rng.beta(3.2, 1.1, n)), np.round(72 * rng.beta(2.0, 1.4, n))),
    )
    tenure = np.clip(tenure + np.where(partner, rng.integers(0, 6, n), 0), 1, 72).astype(int)
    tenure[u(n) < 0.0016] = 0  # signed up this month: no bill yet

    internet = rng.choice(["Fiber optic", "DSL", "No"], size=n, p=[0.44, 0.34, 0.22])
    has_net: NDArray[np.bool_] = internet != "No"
    phone = (u(n) < 0.90) | ~has_net
    loyal: NDArray[np.float64] = np.clip(tenure / 72, 0, 1)  # long-standing customers buy more add-ons

    def addon(p_base: float, tenure_gain: float) -> np.ndarray:
        return has_net & (u(n) < p_base + tenure_gain * loyal)

    security = addon(0.15, 0.40)
    backup = addon(0.25, 0.35)
    protection = addon(0.25, 0.35)
    support = addon(0.15, 0.40)
    fiber = internet == "Fiber optic"
    tv = has_net & (u(n) < np.where(fiber, 0.58, 0.35))
    movies = has_net & (u(n) < np.where(fiber, 0.58, 0.35))
    multi = phone & (u(n) < 0.25 + 0.35 * loyal)

    paperless = u(n) < np.where(has_net, 0.66, 0.33)
    payment = np.where(
        u(n) < np.where(mtm, 0.50, 0.14),
        "Electronic check",
        rng.choice(
            ["Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"],
            size=n,
            p=[0.32, 0.34, 0.34],
        ),
    )

    monthly = (
        np.where(phone, 20.0, 0.0)
        + np.where(multi, 5.0, 0.0)
        + np.where(fiber, 50.0, np.where(internet == "DSL", 28.0, 0.0))
        + 5.0 * (security.astype(int) + backup + protection + support)
        + 10.0 * (tv.astype(int) + movies)
        + rng.normal(0, 1.5, n)
    )
    monthly = np.round(np.clip(monthly, 18.25, 118.75), 2)
    # price changes over the years: the bill history is not exactly tenure x today's price
    total = np.round(tenure * monthly * rng.normal(1.0, 0.06, n) + rng.normal(0, 10, n) * (tenure > 0), 2)
    total = np.where(tenure == 0, 0.0, np.clip(total, monthly, None))

    logit = (
        -0.13
        - 1.35 * (contract == "One year")
        - 2.6 * two
        - 0.72 * np.log1p(tenure)
        + 1.05 * fiber
        - 0.45 * (internet == "No")
        + 0.55 * (payment == "Electronic check")
        + 0.45 * (has_net & ~support)
        + 0.45 * (has_net & ~security)
        + 0.30 * paperless
        + 0.30 * senior
        - 0.25 * dependents
        + 0.15 * (tv | movies)
        + 0.016 * (monthly - 65)
        + rng.normal(0, 1.3, n)  # what the table does not record: service outages, competitors' offers
    )
    churned = u(n) < _sigmoid(logit)

    def yes_no_net(flag: np.ndarray) -> np.ndarray:
        return np.where(~has_net, "No internet service", np.where(flag, "Yes", "No"))

    frame = pd.DataFrame(
        {
            "customerID": _ids(rng, n),
            "gender": gender,
            "SeniorCitizen": pd.array(senior, dtype="Int64"),
            "Partner": pd.array(partner, dtype="boolean"),
            "Dependents": pd.array(dependents, dtype="boolean"),
            "tenure": pd.array(tenure, dtype="Int64"),
            "PhoneService": pd.array(phone, dtype="boolean"),
            "MultipleLines": np.where(~phone, "No phone service", np.where(multi, "Yes", "No")),
            "InternetService": internet,
            "OnlineSecurity": yes_no_net(security),
            "OnlineBackup": yes_no_net(backup),
            "DeviceProtection": yes_no_net(protection),
            "TechSupport": yes_no_net(support),
            "StreamingTV": yes_no_net(tv),
            "StreamingMovies": yes_no_net(movies),
            "Contract": contract,
            "PaperlessBilling": pd.array(paperless, dtype="boolean"),
            "PaymentMethod": payment,
            "MonthlyCharges": monthly.astype("float64"),
            "TotalCharges": total.astype("float64"),
            "Churn": pd.array(churned, dtype="boolean"),
            "event_timestamp": _timestamps(rng, n),
        }
    )
    return frame[CHURN_COLUMNS]


def _text(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "Yes" if value else "No"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _position(frame: pd.DataFrame, column: object) -> int:
    """Where a column is (``dirty`` edits cells by position; a repeated name has no single place)."""
    loc = frame.columns.get_loc(column)
    if not isinstance(loc, int):
        raise ValueError(f"column {column!r} occurs more than once; give each column one name")
    return loc


def dirty(
    df: pd.DataFrame,
    seed: int = 0,
    *,
    duplicates: float = 0.002,
    spaces: float = 0.01,
    out_of_range: float = 0.001,
) -> pd.DataFrame:
    """The table as a raw CSV export has it: every value a string, as written to the file.

    * flags are ``Yes``/``No``; missing values are empty strings;
    * ``TotalCharges`` is a single blank (``" "``) for customers with ``tenure`` 0, as in the IBM export;
    * ``duplicates`` (share of rows) exact copies of random rows, shuffled in;
    * ``spaces`` of the ``MonthlyCharges``/``TotalCharges``/``tenure`` values padded with stray spaces;
    * ``out_of_range`` of the rows get an impossible ``tenure`` (-1 or 999) or a negative ``MonthlyCharges``.

    Which rows were changed is recorded in ``result.attrs["skiff_dirty"]`` (counts and customer ids),
    so tests of ingestion can check every one was caught. Works on any frame; the churn-specific parts
    apply when the churn columns are present.
    """
    rng = np.random.default_rng(seed)
    out = df.copy()
    for col in out.columns:
        out[col] = [_text(v) for v in out[col].astype(object)]
    record: dict[str, object] = {}

    if "TotalCharges" in out and "tenure" in df:
        new = (pd.to_numeric(df["tenure"], errors="coerce") == 0).to_numpy()
        out.loc[new, "TotalCharges"] = " "
        record["blank_total_charges"] = int(new.sum())

    numeric_cols = [c for c in ("MonthlyCharges", "TotalCharges", "tenure") if c in out]
    padded = 0
    for col in numeric_cols:
        rows = np.flatnonzero((rng.random(len(out)) < spaces) & (out[col].str.strip() != "").to_numpy())
        j = _position(out, col)
        for i in rows.tolist():
            v = out.iat[i, j]
            out.iat[i, j] = rng.choice([f" {v}", f"{v} ", f"  {v} "])
        padded += len(rows)
    record["padded_numbers"] = padded

    bad_ids: list[str] = []
    if "tenure" in out and "MonthlyCharges" in out:
        rows = np.flatnonzero(rng.random(len(out)) < out_of_range)
        for i in rows.tolist():
            if rng.random() < 0.5:
                out.iat[i, _position(out, "tenure")] = str(rng.choice([-1, 999]))
            else:
                out.iat[i, _position(out, "MonthlyCharges")] = f"-{rng.uniform(1, 50):.2f}"
        key = "customerID" if "customerID" in out else out.columns[0]
        bad_ids = [str(out.iat[i, _position(out, key)]) for i in rows.tolist()]
    record["out_of_range"] = len(bad_ids)
    record["out_of_range_ids"] = bad_ids

    n_dup = int(round(len(out) * duplicates))
    if n_dup:
        copies = out.iloc[rng.choice(len(out), size=n_dup, replace=False)]
        out = pd.concat([out, copies], ignore_index=True)
        out = out.iloc[rng.permutation(len(out))].reset_index(drop=True)
    record["duplicates"] = n_dup
    out.attrs["skiff_dirty"] = record
    return out


# coastline of California as (latitude, longitude) points, south to north
_COAST = np.array(
    [
        (32.5, -117.1),
        (34.0, -118.5),
        (34.5, -120.6),
        (36.0, -121.5),
        (37.8, -122.5),
        (40.0, -124.1),
        (42.0, -124.3),
    ]
)
# population centres: (latitude, longitude, share of block groups, spread in degrees, income premium)
_CENTRES = [
    (34.05, -118.25, 0.34, 0.35, 0.10),  # Los Angeles
    (37.65, -122.15, 0.20, 0.30, 0.35),  # San Francisco Bay
    (32.80, -117.10, 0.09, 0.20, 0.10),  # San Diego
    (38.60, -121.40, 0.07, 0.25, -0.05),  # Sacramento
    (36.70, -119.80, 0.12, 0.60, -0.25),  # Central Valley
    (34.00, -117.30, 0.10, 0.30, -0.10),  # Inland Empire
    (40.60, -123.00, 0.08, 0.80, -0.20),  # the north
]


def housing(n: int = 20_640, seed: int = 0) -> pd.DataFrame:
    """A typed housing-price table: one row per census block group, value capped at 500,001 as in the
    1990 California census data. Value grows with income, near the coast and near the two big metros."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    shares = np.array([c[2] for c in _CENTRES])
    which = rng.choice(len(_CENTRES), size=n, p=shares / shares.sum())
    centre = np.array([c[:2] for c in _CENTRES])[which]
    spread = np.array([c[3] for c in _CENTRES])[which]
    lat = np.clip(centre[:, 0] + rng.normal(0, 1, n) * spread, 32.55, 41.95)
    lon = centre[:, 1] + rng.normal(0, 1, n) * spread
    coast_lon = np.interp(lat, _COAST[:, 0], _COAST[:, 1])
    lon = np.clip(np.maximum(lon, coast_lon + 0.01), -124.35, -114.3)
    inland = lon - coast_lon  # degrees east of the coast (~90 km each)

    island = rng.random(n) < 0.0005
    lat[island] = rng.uniform(33.33, 33.45, island.sum())
    lon[island] = rng.uniform(-118.6, -118.3, island.sum())
    near_bay = (np.hypot(lat - 37.8, lon + 122.3) < 0.45) & (inland < 0.6)
    proximity = np.select(
        [island, near_bay, inland < 0.12, inland < 1.3],
        ["ISLAND", "NEAR BAY", "NEAR OCEAN", "<1H OCEAN"],
        default="INLAND",
    )

    premium = np.array([c[4] for c in _CENTRES])[which]
    income = np.clip(np.exp(np.log(3.4) + premium + rng.normal(0, 0.45, n)), 0.5, 15.0)
    age = np.clip(np.round(rng.uniform(1, 60, n)), 1, 52).astype(int)
    rooms = np.clip(3.2 + 0.45 * income + rng.normal(0, 0.9, n) + 0.8 * (inland > 1.5), 1.0, 30.0)
    bedrooms = np.clip(rooms * rng.normal(0.205, 0.02, n), 0.5, None)
    occupancy = np.clip(np.exp(rng.normal(np.log(2.8), 0.25, n)), 1.0, 12.0)
    population = np.clip(np.round(np.exp(rng.normal(np.log(1150), 0.55, n))), 3, 35_000).astype(int)

    metro = np.exp(-np.hypot(lat - 34.05, lon + 118.25) / 0.8) + np.exp(
        -np.hypot(lat - 37.7, lon + 122.3) / 0.6
    )
    value = (
        -0.25
        + 0.42 * income
        + 1.0 * np.exp(-inland / 0.5)
        + 0.9 * metro
        + 0.004 * age
        - 0.12 * (occupancy - 2.8)
        + 0.5 * island
        + rng.normal(0, 0.6, n) * (0.6 + 0.1 * income)
    )
    value = np.clip(np.round(value * 100_000, -2), 14_999, 500_001)

    frame = pd.DataFrame(
        {
            "block_id": [f"blk-{i:06d}" for i in range(1, n + 1)],
            "event_timestamp": _timestamps(rng, n),
            "median_income": np.round(income, 4),
            "house_age": pd.array(age, dtype="Int64"),
            "rooms": np.round(rooms, 3),
            "bedrooms": np.round(bedrooms, 3),
            "population": pd.array(population, dtype="Int64"),
            "occupancy": np.round(occupancy, 3),
            "latitude": np.round(lat, 2),
            "longitude": np.round(lon, 2),
            "ocean_proximity": proximity,
            "median_house_value": value.astype("float64"),
        }
    )
    return frame[HOUSING_COLUMNS]
