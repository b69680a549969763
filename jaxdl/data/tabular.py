"""Numeric tables (a CSV file, or a scikit-learn bundled set) as seeded train/validation/test splits,
standardised with statistics of the training split only, plus linear reference models fitted on the same split.

Inputs are float32 (N, features); targets float32 (N,) for regression (standardised when asked) or int32 0/1
for binary classification. Rows with a missing or non-finite value in any used column are dropped and counted.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxdl.data.sources import ArraySource
from jaxdl.errors import UsageError

# Cells meaning "no value" (compared lower-cased and stripped); "nan" and "inf" parse as floats and are caught as
# non-finite.
MISSING = ("", "na", "n/a", "nan", "null", "none", "?", "-")
SKLEARN_SETS = {"diabetes": "load_diabetes", "breast_cancer": "load_breast_cancer"}


@dataclasses.dataclass(frozen=True)
class Table:
    """The splits of one table, standardised with the training split's statistics, and those statistics."""

    train: ArraySource
    validation: ArraySource | None  # None when validation_fraction is 0
    test: ArraySource
    feature_names: tuple[str, ...]
    feature_mean: np.ndarray  # of the training split; inputs = (raw - mean) / std
    feature_std: np.ndarray  # 1 where a feature is constant on the training split
    target_mean: float = 0.0  # targets = (raw - target_mean) / target_std; 0 and 1 when not standardised
    target_std: float = 1.0
    dropped_rows: int = 0  # rows dropped for a missing or non-finite value


def read_csv(
    path: str | Path, target: str, features: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], int]:
    """(features (N, F) float64, target (N,) float64, feature names, rows dropped) from a CSV file with a header.

    `features` () means every column but the target. Missing cells (empty, NA, ?, ...) or non-finite values in a
    used column drop the row; any other non-numeric cell is an error naming the column.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config.data.csv={path}: no such file; give the path of a CSV file with a header row")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a spreadsheet's byte-order mark
            rows = [row for row in csv.reader(f) if row]
    except (UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"--config.data.csv={path}: not a readable UTF-8 CSV file ({e})") from None
    if len(rows) < 2:
        raise UsageError(f"--config.data.csv={path}: needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    ragged = next((i for i, row in enumerate(rows[1:], start=2) if len(row) != len(header)), None)
    if ragged is not None:
        raise UsageError(f"{path}: line {ragged} has {len(rows[ragged - 1])} fields where the header has {len(header)}")
    listing = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
    if not target:
        raise UsageError(f"--config.data.csv needs --config.data.target=COLUMN, one of: {listing}")
    if target not in header:
        raise UsageError(f"--config.data.target={target}: no such column in {path}; its columns are: {listing}")
    features = tuple(features) or tuple(name for name in header if name != target)
    unknown = [name for name in features if name not in header]
    if unknown or target in features or not features:
        problem = f"unknown columns {unknown}" if unknown else "the target is among them" if features else "none"
        raise UsageError(f"--config.data.features: {problem}; choose feature columns of {path} other than {target}")
    cells = np.array(rows[1:], dtype=str)
    columns = [_numeric_column(cells[:, header.index(name)], name, path) for name in (*features, target)]
    table = np.stack(columns, axis=1)
    keep = np.all(np.isfinite(table), axis=1)
    if not keep.any():
        raise UsageError(f"{path}: every row has a missing value in the columns used; nothing left to train on")
    return table[keep, :-1], table[keep, -1], features, int((~keep).sum())


def _numeric_column(cells: np.ndarray, name: str, path: Path) -> np.ndarray:
    """One column as float64, NaN where a cell is missing; a UsageError at the first non-numeric cell."""
    missing = np.isin(np.char.lower(np.char.strip(cells)), MISSING)
    values = np.full(len(cells), np.nan)
    for i in np.flatnonzero(~missing):  # Python's float(): the same parsing rules as any CSV tool's
        try:
            values[i] = float(cells[i])
        except ValueError:
            raise UsageError(
                f"{path}: column '{name}' is not numeric ('{cells[i]}' on line {i + 2}); remove it from the file or "
                "list the numeric feature columns with --config.data.features=\"('a', 'b')\""
            ) from None
    return values


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(features, target, feature names) of a dataset bundled with scikit-learn (no download)."""
    import sklearn.datasets

    if name not in SKLEARN_SETS:
        raise UsageError(f"no bundled table '{name}'; choose one of {', '.join(SKLEARN_SETS)}")
    bunch = getattr(sklearn.datasets, SKLEARN_SETS[name])()
    return bunch.data.astype(np.float64), bunch.target.astype(np.float64), tuple(bunch.feature_names)


def split_and_standardize(
    features: np.ndarray,
    target: np.ndarray,
    feature_names: Sequence[str],
    *,
    seed: int,
    test_fraction: float,
    validation_fraction: float,
    binary: bool = False,
    standardize_targets: bool = False,
    dropped_rows: int = 0,
) -> Table:
    """Seeded train/validation/test splits; inputs (and targets, when asked) standardised with the mean and
    standard deviation of the training split alone, so nothing about validation or test leaks into training."""
    if not 0 < test_fraction < 1 or not 0 <= validation_fraction < 1 or test_fraction + validation_fraction >= 1:
        raise UsageError(
            f"--config.data.test_fraction={test_fraction}, validation_fraction={validation_fraction}: need "
            "0 < test, 0 <= validation and test + validation < 1"
        )
    n = len(target)
    test_size = max(1, round(n * test_fraction))
    validation_size = max(1, round(n * validation_fraction)) if validation_fraction else 0
    if n - test_size - validation_size < 1:
        raise UsageError(f"{n} rows are too few for a test, validation and training split; give more data")
    if binary and not np.isin(target, (0, 1)).all():
        raise UsageError(
            f"the target holds values other than 0 and 1 (e.g. {target[~np.isin(target, (0, 1))][0]}); "
            "binary classification needs labels 0 and 1"
        )
    order = np.random.default_rng(seed).permutation(n)
    test_rows, validation_rows = order[:test_size], order[test_size : test_size + validation_size]
    train_rows = order[test_size + validation_size :]

    mean, std = features[train_rows].mean(0), features[train_rows].std(0)
    std = np.where(std > 0, std, 1.0)  # a constant feature stays 0 instead of becoming NaN
    target_mean, target_std = 0.0, 1.0
    if standardize_targets:
        target_mean, target_std = float(target[train_rows].mean()), float(target[train_rows].std() or 1.0)

    def source(rows: np.ndarray) -> ArraySource:
        inputs = ((features[rows] - mean) / std).astype(np.float32)
        targets = target[rows].astype(np.int32) if binary else ((target[rows] - target_mean) / target_std)
        return ArraySource({"inputs": inputs, "targets": targets if binary else targets.astype(np.float32)})

    return Table(
        train=source(train_rows),
        validation=source(validation_rows) if validation_size else None,
        test=source(test_rows),
        feature_names=tuple(feature_names),
        feature_mean=mean,
        feature_std=std,
        target_mean=target_mean,
        target_std=target_std,
        dropped_rows=dropped_rows,
    )


def load(data: ml_collections.ConfigDict, seed: int, default: str, binary: bool = False) -> Table:
    """The table a config's `data` section names: `data.csv` (with `data.target`, optional `data.features`), else
    scikit-learn's bundled `default`; split by `seed` with `data.test_fraction`/`data.validation_fraction`."""
    if data.csv:
        features, target, names, dropped = read_csv(data.csv, data.target, tuple(data.features))
        if jax.process_index() == 0:  # one line per run, not one per process
            print(
                f"{data.csv}: {len(target)} rows used, {dropped} dropped for missing or non-finite values",
                file=sys.stderr,
            )
    else:
        if data.target or data.features:
            raise UsageError("--config.data.target/features select columns of a CSV file: give --config.data.csv too")
        (features, target, names), dropped = load_sklearn(default), 0
    return split_and_standardize(
        features,
        target,
        names,
        seed=seed,
        test_fraction=data.test_fraction,
        validation_fraction=data.validation_fraction,
        binary=binary,
        standardize_targets=data.get("standardize_targets", False),
        dropped_rows=dropped,
    )


def tabular_config(test_fraction: float = 0.2, validation_fraction: float = 0.1) -> dict:
    """The `data` fields `load` reads, for an experiment's get_config: `config.data.update(tabular_config())`."""
    return {
        "csv": "",  # a CSV file with a header row; "" = the experiment's bundled scikit-learn set
        "target": "",  # the column to predict (with csv)
        "features": (),  # the input columns (with csv); () = all but the target
        "test_fraction": test_fraction,
        "validation_fraction": validation_fraction,  # 0 = no validation split (evaluations use the test split)
    }


def least_squares_predictions(table: Table) -> np.ndarray:
    """Test-split predictions (in the targets' units) of a linear model with intercept, fitted by numpy's
    least squares on the training split: the reference a regression model should beat."""
    design = lambda x: np.column_stack([x.astype(np.float64), np.ones(len(x))])
    train, test = table.train.arrays, table.test.arrays
    coefficients, *_ = np.linalg.lstsq(design(train["inputs"]), train["targets"].astype(np.float64), rcond=None)
    return design(test["inputs"]) @ coefficients


def logistic_regression_logits(table: Table) -> np.ndarray:
    """Test-split logits of scikit-learn's logistic regression (default L2, C=1) fitted on the training split:
    the linear reference a binary classifier should beat."""
    from sklearn.linear_model import LogisticRegression

    train, test = table.train.arrays, table.test.arrays
    model = LogisticRegression(max_iter=1000).fit(train["inputs"], train["targets"])
    return model.decision_function(test["inputs"])
