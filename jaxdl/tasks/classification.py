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
        confusion = confusion_matrix(batch["targets"], jnp.argmax(logits, -1), self.num_classes, mask)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
        return {"loss_sum": masked_sum(loss, mask), "count": jnp.sum(mask), "confusion": confusion}

    def summarize(self, sums: dict) -> dict[str, float]:
        confusion = np.asarray(sums["confusion"], np.float64)
        count = float(sums["count"])
        _, _, f1 = precision_recall_f1(confusion)
        return {
            "loss": float(sums["loss_sum"]) / count,
            "accuracy": float(np.trace(confusion)) / count,
            "macro_f1": float(f1.mean()),
            "count": int(count),
        }


def confusion_matrix(labels: jax.Array, predicted: jax.Array, num_classes: int, mask: jax.Array) -> jax.Array:
    """confusion[true, predicted] counts (int32) over the unmasked examples; sums of it over batches add up.

    A one-hot matmul rather than a scatter-add: it shards like any other batch reduction.
    """
    true_one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * mask[:, None]
    return true_one_hot.T @ jax.nn.one_hot(predicted, num_classes, dtype=jnp.int32)


def precision_recall_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from confusion[true, predicted]; 0 where a class was never predicted
    (precision) or never present (recall), as scikit-learn reports them with zero_division=0."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    precision = true_positive / np.maximum(confusion.sum(0), 1)
    recall = true_positive / np.maximum(confusion.sum(1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return precision, recall, f1
