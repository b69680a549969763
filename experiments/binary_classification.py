"""Binary classification (sigmoid + cross-entropy) with an MLP: scikit-learn's breast-cancer set, or any CSV."""

import ml_collections

import jaxdl
from jaxdl import data, models, tasks


def get_config() -> ml_collections.ConfigDict:
    # --config.data.csv=PATH --config.data.target=COLUMN (labels 0/1) trains on your own table instead.
    # In the bundled set, label 1 (the positive class of precision and recall) is "benign", 0 "malignant".
    config = jaxdl.default_config()
    config.data.update(data.tabular.tabular_config(test_fraction=0.2, validation_fraction=0.1))
    config.data.batch_size = 32
    config.data.eval_batch_size = 256
    config.train.num_epochs = 50
    config.train.log_every_steps = 50
    config.train.eval_every_steps = 100
    config.checkpoint.every_steps = 1000
    # A small, weight-decayed MLP: the table has 569 rows (notes: issue 7 for the recipes tried).
    config.optim.update(name="adamw", schedule="cosine", learning_rate=1e-3, weight_decay=0.1)
    config.model = ml_collections.ConfigDict({"hidden": (32,), "activation": "relu", "dropout": 0.0})
    config.task = ml_collections.ConfigDict({"threshold": 0.5})
    return config


def build(config: ml_collections.ConfigDict) -> jaxdl.Experiment:
    table = data.tabular.load(config.data, config.seed, default="breast_cancer", binary=True)
    task = tasks.BinaryClassification(threshold=config.task.threshold)
    baseline = task.evaluate_predictions(data.tabular.logistic_regression_logits(table), table.test.arrays["targets"])
    return jaxdl.Experiment(
        model=models.MLP(outputs=1, dtype=config.dtype, **config.model),
        task=task,
        data=data.Dataset(train=table.train, validation=table.validation, test=table.test, reference=baseline),
    )
