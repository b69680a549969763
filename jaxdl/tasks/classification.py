"""Classification into `num_classes` classes from logits, with integer labels in batch["targets"]."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.tasks.supervised import Metrics, SupervisedTask, masked_sum


@dataclasses.dataclass(frozen=True)
class Classification(SupervisedTask):
    num_classes: int
    label_smoothing: float = 0.0

    def loss(self, logits: jax.Array, batch: dict) -> jax.Array:
        logits = logits.astype(jnp.float32)  # the loss in float32 even when the model computes in bfloat16
        labels = jax.nn.one_hot(batch["targets"], self.num_classes)
        labels = optax.smooth_labels(labels, self.label_smoothing) if self.label_smoothing else labels
        return optax.softmax_cross_entropy(logits, labels)

    def train_metrics(self, logits: jax.Array, batch: dict) -> Metrics:
        return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["targets"])}

    def eval_sums(self, logits: jax.Array, batch: dict) -> Metrics:
        mask = batch["mask"]
        predicted = jnp.argmax(logits, -1)
        # confusion[true, predicted]: accuracy, precision, recall and F1 all follow from it. A one-hot matmul
        # rather than a scatter-add: it shards like any other batch reduction.
        true_one_hot = jax.nn.one_hot(batch["targets"], self.num_classes, dtype=jnp.int32) * mask[:, None]
        confusion = true_one_hot.T @ jax.nn.one_hot(predicted, self.num_classes, dtype=jnp.int32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
        return {"loss_sum": masked_sum(loss, mask), "count": jnp.sum(mask), "confusion": confusion}

    def summarize(self, sums: dict) -> dict[str, float]:
        confusion = np.asarray(sums["confusion"], np.float64)
        count = float(sums["count"])
        true_positive = np.diag(confusion)
        precision = true_positive / np.maximum(confusion.sum(0), 1)
        recall = true_positive / np.maximum(confusion.sum(1), 1)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return {
            "loss": float(sums["loss_sum"]) / count,
            "accuracy": float(true_positive.sum()) / count,
            "macro_f1": float(f1.mean()),
            "count": int(count),
        }
