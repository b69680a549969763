"""Tables: the CSV loader (bad rows, train-only standardisation, clear errors), the regression and binary metrics
against scikit-learn, and the linear baselines."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from sklearn import metrics as sk_metrics
from sklearn.linear_model import LinearRegression

from jaxdl import tasks
from jaxdl.data import tabular
from jaxdl.errors import UsageError

from conftest import read_metrics, run_cli


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(str(c) for c in row) for row in rows)]) + "\n")
    return path


def data_config(csv="", target="", features=(), **extra):
    return ml_collections.ConfigDict(
        {
            **tabular.tabular_config(test_fraction=0.2, validation_fraction=0.2),
            "csv": str(csv),
            "target": target,
            "features": features,
            **extra,
        }
    )


@pytest.fixture
def clean_csv(tmp_path):
    """60 rows; the target is the row number, so every split row can be traced back to its raw values."""
    rng = np.random.default_rng(0)
    raw = np.column_stack([rng.normal(5, 3, 60), rng.exponential(10, 60), np.full(60, 7.0)])  # a constant column too
    path = write_csv(tmp_path / "clean.csv", ["a", "b", "const", "y"], [[*r, i] for i, r in enumerate(raw)])
    return path, raw


def test_rows_with_missing_or_nonfinite_values_are_dropped_and_counted(tmp_path, capsys):
    rows = [[i, 2 * i, i % 3] for i in range(20)]
    rows[3][0], rows[7][1], rows[11][2], rows[15][0] = "", "NA", "?", "inf"
    rows[18][1] = " n/a "
    path = write_csv(tmp_path / "gaps.csv", ["x1", "x2", "target"], rows)
    features, target, names, dropped = tabular.read_csv(path, "target")
    np.testing.assert_array_equal(target, features[:, 0] % 3)
    assert dropped == 5 and features.shape == (15, 2) and names == ("x1", "x2")
    assert set(features[:, 0]) == {float(i) for i in range(20)} - {3, 7, 11, 15, 18}
    table = tabular.load(data_config(path, "target"), seed=0, default="diabetes")
    assert table.dropped_rows == 5
    assert len(table.train) + len(table.validation) + len(table.test) == 15
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"{path}: 15 rows used, 5 dropped for missing or non-finite values"]
    # A missing value in a column that is not used does not drop the row.
    assert tabular.read_csv(path, "target", features=("x2",))[3] == 3


def test_standardised_with_the_training_split_statistics_only(clean_csv):
    path, raw = clean_csv
    table = tabular.load(data_config(path, "y"), seed=3, default="diabetes")
    rows = {name: getattr(table, name).arrays["targets"].astype(int) for name in ("train", "validation", "test")}
    assert sorted(np.concatenate(list(rows.values()))) == list(range(60))  # disjoint and complete
    assert (len(rows["test"]), len(rows["validation"])) == (12, 12)
    mean, std = raw[rows["train"]].mean(0), raw[rows["train"]].std(0)
    std[2] = 1.0  # the constant column is centred, not divided by zero
    np.testing.assert_allclose(table.feature_mean, mean, rtol=1e-12)
    for name, source in (("train", table.train), ("validation", table.validation), ("test", table.test)):
        np.testing.assert_allclose(source.arrays["inputs"], (raw[rows[name]] - mean) / std, rtol=1e-5, atol=1e-6)
        assert source.arrays["inputs"].dtype == np.float32
    assert not np.allclose(mean, raw.mean(0))  # so statistics of all rows would have failed the check above
    np.testing.assert_allclose(table.train.arrays["inputs"].mean(0), [0, 0, 0], atol=1e-5)
    # The seed decides the split: the same seed repeats it, another one changes it.
    again = tabular.load(data_config(path, "y"), seed=3, default="diabetes")
    other = tabular.load(data_config(path, "y"), seed=4, default="diabetes")
    np.testing.assert_array_equal(again.test.arrays["targets"], table.test.arrays["targets"])
    assert set(other.test.arrays["targets"]) != set(table.test.arrays["targets"])


def test_standardised_targets_keep_the_training_statistics(clean_csv):
    path, _ = clean_csv
    table = tabular.load(data_config(path, "y", standardize_targets=True), seed=0, default="diabetes")
    restore = lambda source: source.arrays["targets"] * table.target_std + table.target_mean
    train_targets = restore(table.train)
    assert table.target_mean == pytest.approx(train_targets.mean()) and table.target_std == pytest.approx(
        train_targets.std(), rel=1e-5
    )
    assert np.allclose(restore(table.test), np.round(restore(table.test)), atol=1e-4)  # row numbers come back


BAD_TABLES = [
    (["a,b,y", "1,2,3"], {"target": "z"}, "--config.data.target=z: no such column"),
    (["a,b,y", "1,2,3"], {"target": ""}, "--config.data.csv needs --config.data.target=COLUMN"),
    (["a,name,y", "1,bob,3", "2,ann,4"], {"target": "y"}, "column 'name' is not numeric ('bob' on line 2)"),
    (["a,b,y", "1,2,3", "1,2"], {"target": "y"}, "line 3 has 2 fields where the header has 3"),
    (["a,b,y"], {"target": "y"}, "needs a header row and at least one data row"),
    (["a,b,y", "1,2,3"], {"target": "y", "features": ("a", "c")}, "unknown columns ['c']"),
    (["a,b,y", ",2,3", "1,,3"], {"target": "y"}, "every row has a missing value"),
]


@pytest.mark.parametrize(("lines", "fields", "message"), BAD_TABLES, ids=[m[:24] for _, _, m in BAD_TABLES])
def test_bad_tables_are_one_line_usage_errors(tmp_path, lines, fields, message):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError) as raised:
        tabular.load(data_config(path, **fields), seed=0, default="diabetes")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_other_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        tabular.read_csv(tmp_path / "absent.csv", "y")
    with pytest.raises(UsageError, match=r"give --config\.data\.csv too"):
        tabular.load(data_config(target="y"), seed=0, default="diabetes")
    features, target = np.zeros((10, 2)), np.arange(10.0)
    with pytest.raises(UsageError, match="binary classification needs labels 0 and 1"):
        tabular.split_and_standardize(
            features, target, ("a", "b"), seed=0, test_fraction=0.2, validation_fraction=0, binary=True
        )
    with pytest.raises(UsageError, match="test_fraction"):
        tabular.split_and_standardize(features, target, ("a", "b"), seed=0, test_fraction=0.6, validation_fraction=0.5)


def test_the_cli_rejects_a_missing_target_column_with_exit_2_and_writes_nothing(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "b", "price"], [[1, 2, 3], [4, 5, 6]])
    workdir = tmp_path / "run"
    result = run_cli(
        "--experiment=tabular_regression",
        f"--workdir={workdir}",
        f"--config.data.csv={path}",
        "--config.data.target=cost",
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"jaxdl: error: --config.data.target=cost: no such column in {path}; its columns are: a, b, price"
    assert "Traceback" not in result.stderr and not workdir.exists()


def test_regression_metrics_from_batch_sums_match_sklearn():
    rng = np.random.default_rng(1)
    targets = rng.normal(0.3, 1.2, 37).astype(np.float32)
    predictions = (targets + rng.normal(0, 0.7, 37)).astype(np.float32)
    task = tasks.Regression(target_scale=25.0)
    # Two evaluation batches of 20, the second padded with 3 masked rows holding garbage.
    padded = lambda a: np.concatenate([a, np.full(3, 1e3, np.float32)])
    batches = [
        (predictions[:20, None], {"targets": targets[:20], "mask": np.ones(20, bool)}),
        (padded(predictions[20:])[:, None], {"targets": padded(targets[20:]), "mask": np.arange(20) < 17}),
    ]
    sums = [jax.device_get(task.eval_sums(jnp.asarray(out), batch)) for out, batch in batches]
    result = task.summarize(jax.tree.map(lambda a, b: a + b, *sums))
    assert result["count"] == 37
    assert result["r2"] == pytest.approx(sk_metrics.r2_score(targets, predictions), rel=1e-5)
    assert result["mse"] == pytest.approx(625 * sk_metrics.mean_squared_error(targets, predictions), rel=1e-5)
    assert result["mae"] == pytest.approx(25 * sk_metrics.mean_absolute_error(targets, predictions), rel=1e-5)
    assert result["loss"] == pytest.approx(sk_metrics.mean_squared_error(targets, predictions), rel=1e-5)
    np.testing.assert_allclose(
        task.loss(jnp.asarray(predictions[:, None]), {"targets": targets}), (predictions - targets) ** 2, rtol=1e-6
    )


def test_binary_metrics_match_sklearn_on_fixed_predictions():
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1])
    logits = np.array([2.0, -1.0, -0.5, 0.3, 0.2, -3.0, 1.0, 0.1, -2.0, 4.0, -0.2, 0.0])  # 0.0 -> p = 0.5 -> 1
    predicted = (logits >= 0).astype(int)
    result = tasks.BinaryClassification().evaluate_predictions(logits, labels)
    assert result["precision"] == pytest.approx(sk_metrics.precision_score(labels, predicted))
    assert result["recall"] == pytest.approx(sk_metrics.recall_score(labels, predicted))
    assert result["f1"] == pytest.approx(sk_metrics.f1_score(labels, predicted))
    assert result["accuracy"] == pytest.approx(sk_metrics.accuracy_score(labels, predicted))
    (tn, fp), (fn, tp) = sk_metrics.confusion_matrix(labels, predicted)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (tp, fp, fn, tn)
    expected_loss = np.mean(np.logaddexp(0, logits) - labels * logits)  # -log sigmoid(+-logit)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # Another threshold moves predictions the way the probabilities say.
    strict = tasks.BinaryClassification(threshold=0.7).evaluate_predictions(logits, labels)
    assert strict["tp"] + strict["fp"] == int((1 / (1 + np.exp(-logits)) >= 0.7).sum())


def test_multiclass_macro_f1_uses_the_same_maths_and_matches_sklearn():
    rng = np.random.default_rng(2)
    labels, predicted = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    predicted[predicted == 3] = 2  # class 3 never predicted: precision 0 by convention, as sklearn's zero_division=0
    sums = tasks.Classification(num_classes=4).eval_sums(
        jax.nn.one_hot(predicted, 4), {"targets": jnp.asarray(labels), "mask": jnp.ones(50, bool)}
    )
    result = tasks.Classification(num_classes=4).summarize(jax.device_get(sums))
    assert result["macro_f1"] == pytest.approx(sk_metrics.f1_score(labels, predicted, average="macro", zero_division=0))


def test_least_squares_baseline_equals_sklearn_linear_regression():
    table = tabular.load(data_config(standardize_targets=True), seed=0, default="diabetes")
    x, y = table.train.arrays["inputs"], table.train.arrays["targets"]
    expected = LinearRegression().fit(x, y).predict(table.test.arrays["inputs"])
    np.testing.assert_allclose(tabular.least_squares_predictions(table), expected, rtol=1e-4, atol=1e-5)


def test_tabular_experiments_train_and_report_their_baselines(tmp_path):
    """Short real runs of both experiments: the loss falls, the test metrics cover the whole test split and the
    reference model's line comes first, with the same metrics."""
    import jaxdl

    for name, test_rows in (("tabular_regression", 88), ("binary_classification", 114)):  # 20% of 442 and 569
        config = jaxdl.get_config(name)
        config.train.update(max_steps=40, log_every_steps=5, eval_every_steps=0)
        test = jaxdl.train(config, tmp_path / name)
        lines = read_metrics(tmp_path / name)
        train = [m["loss"] for m in lines if m["split"] == "train"]
        # A fall of a fifth in 40 steps: binary cross-entropy stuck at chance stays at ln 2 = 0.69 (measured runs fall
        # from 0.68 to 0.49-0.50; 0.7x, the old bound, depended on the order of the batches).
        assert train[-1] < 0.8 * train[0], (name, train)
        assert lines[0]["split"] == "baseline" and lines[0]["count"] == test["count"] == test_rows
        assert set(lines[0]) - {"step", "split"} == set(test)


def test_a_csv_trains_from_the_command_line_and_reports_dropped_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    rows = [[*r, r @ [1.0, -2.0, 0.5] + 3] for r in x.round(4)]
    rows[5][1], rows[50][3] = "", "NA"
    path = write_csv(tmp_path / "mine.csv", ["u", "v", "w", "target"], rows)
    workdir = tmp_path / "run"
    result = run_cli(
        "--experiment=tabular_regression",
        f"--workdir={workdir}",
        f"--config.data.csv={path}",
        "--config.data.target=target",
        "--config.train.max_steps=30",
    )
    assert result.returncode == 0, result.stderr
    assert f"{path}: 88 rows used, 2 dropped for missing or non-finite values" in result.stderr.splitlines()
    lines = read_metrics(workdir)
    assert lines[0]["split"] == "baseline" and lines[0]["r2"] > 0.999  # the target is linear in the features
    assert lines[-1]["split"] == "test" and lines[-1]["count"] == 18  # 20% of 88
