"""Regression on a table with a 128-64-1 MLP and MSE: scikit-learn's diabetes set, or any CSV; vs least squares."""

import ml_collections

import jaxdl
from jaxdl import data, models, tasks


def get_config() -> ml_collections.ConfigDict:
    # --config.data.csv=PATH --config.data.target=COLUMN trains on your own table instead.
    config = jaxdl.default_config()
    config.data.update(data.tabular.tabular_config(test_fraction=0.2, validation_fraction=0.1))
    config.data.standardize_targets = True  # the loss sees standardised targets; metrics are in original units
    config.data.batch_size = 32
    config.data.eval_batch_size = 256
    config.train.num_epochs = 40
    config.train.log_every_steps = 50
    config.train.eval_every_steps = 50
    config.checkpoint.every_steps = 200
    # 442 rows overfit a 128-64 MLP within ~20 epochs: dropout and strong decoupled weight decay hold it back
    # (validation R^2 0.43 vs 0.12 after 100 plain epochs; notes: issue 7).
    config.optim.update(name="adamw", schedule="cosine", learning_rate=1e-3, weight_decay=1.0)
    config.model = ml_collections.ConfigDict({"hidden": (128, 64), "activation": "relu", "dropout": 0.3})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    table = data.tabular.load(config.data, config.seed, default="diabetes")
    task = tasks.Regression(target_scale=table.target_std)
    baseline = task.evaluate_predictions(data.tabular.least_squares_predictions(table), table.test.arrays["targets"])
    return jaxdl.Experiment(
        model=models.MLP(outputs=1, dtype=config.dtype, **config.model),
        task=task,
        data=data.Dataset(train=table.train, validation=table.validation, test=table.test, reference=baseline),
    )
