"""Binary classification from one logit per example (sigmoid output), labels 0/1 in batch["targets"].

Reports accuracy and the positive class's (label 1's) precision, recall and F1, with the confusion counts
tp/fp/fn/tn; the maths is the multiclass task's (`classification.precision_recall_f1`) on a 2x2 matrix.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.errors import UsageError
from jaxdl.tasks.classification import confusion_matrix, precision_recall_f1
from jaxdl.tasks.supervised import Metrics, SupervisedTask, masked_sum


@dataclasses.dataclass(frozen=True)
class BinaryClassification(SupervisedTask):
    threshold: float = 0.5  # predict 1 when the sigmoid probability reaches this

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise UsageError(f"threshold={self.threshold}: must be strictly between 0 and 1")

    def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
        """Per-example binary cross-entropy on the logit (optax's numerically stable form), in float32."""
        return optax.sigmoid_binary_cross_entropy(_logits(outputs, batch), batch["targets"].astype(jnp.float32))

    def train_metrics(self, outputs: jax.Array, batch: dict) -> Metrics:
        return {"accuracy": jnp.mean(self._predicted(outputs, batch) == batch["targets"])}

    def eval_sums(self, outputs: jax.Array, batch: dict) -> Metrics:
        mask = batch["mask"]
        confusion = confusion_matrix(batch["targets"].astype(jnp.int32), self._predicted(outputs, batch), 2, mask)
        return {"loss_sum": masked_sum(self.loss(outputs, batch), mask), "count": jnp.sum(mask), "confusion": confusion}

    def summarize(self, sums: dict) -> dict[str, float]:
        confusion = np.asarray(sums["confusion"], np.int64)  # [true, predicted], class 1 the positive one
        precision, recall, f1 = precision_recall_f1(confusion)
        count = float(sums["count"])
        (tn, fp), (fn, tp) = confusion.tolist()
        return {
            "loss": float(sums["loss_sum"]) / count,
            "accuracy": float(tp + tn) / count,
            "precision": float(precision[1]),
            "recall": float(recall[1]),
            "f1": float(f1[1]),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "count": int(count),
        }

    def evaluate_predictions(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """The same metrics for logits computed elsewhere (a reference model), all examples counted."""
        batch = {"targets": np.asarray(targets), "mask": np.ones(len(targets), bool)}
        return self.summarize(jax.device_get(self.eval_sums(np.asarray(logits, np.float32), batch)))

    def _predicted(self, outputs: jax.Array, batch: dict) -> jax.Array:
        # sigmoid(logit) >= threshold without computing the sigmoid: logit >= log(t / (1 - t)).
        cut = float(np.log(self.threshold / (1 - self.threshold)))
        return (_logits(outputs, batch) >= cut).astype(jnp.int32)


def _logits(outputs: jax.Array, batch: dict) -> jax.Array:
    """The model's (N, 1) output as (N,), like the labels, in float32."""
    return outputs.astype(jnp.float32).reshape(batch["targets"].shape)
