"""Training over several workers (``MultiWorkerMirroredStrategy``) with a custom loop instead of ``model.fit``.

Keras 3's ``model.fit`` cannot train under ``MultiWorkerMirroredStrategy`` with more than one worker (it
fails converting a ``PerReplica`` batch, keras-team/keras#20585), so when ``TF_CONFIG`` names more than one
worker :func:`components.train_image.logic.train_image` trains with :class:`DistributedTrainer`, which
follows the TensorFlow multi-worker custom-training-loop recipe:

- input: :meth:`tf.distribute.Strategy.distribute_datasets_from_function`: each worker builds its own
  ``tf.data`` pipeline (:func:`components.train_image.data.make_dataset`) over its shard of the images
  (every ``num_input_pipelines``-th image from its ``input_pipeline_id``: each worker decodes only its
  share) batched at the per-replica batch; the global batch is the per-replica batch times the replicas of
  all workers. Shards of unequal length are fine: the distributed iterator agrees across workers on
  when the data ends (partial batch handling), so every worker runs the same number of steps, a worker
  whose shard has run out getting an empty batch (its step skips the model, adds nothing and still joins
  the all-reduce);
- a ``tf.function`` train step run on every replica with ``strategy.run``: the class-weighted cross-entropy
  summed over the replica's images and divided by the images of the step on all replicas (the global batch,
  fewer in an epoch's last step; what ``model.fit`` averages over on one worker), gradients summed over the
  replicas by the Keras optimizer (created and built under the strategy's scope), the loss, correct
  predictions and images seen summed over replicas with ``strategy.reduce``;
- validation and test accuracy computed the same way (sums over all workers), so every worker sees the same
  numbers and takes the same early-stopping decision (:class:`components.train_image.phases.BestEpoch`).

The phases, learning rates and early stopping are the ones ``model.fit`` uses on one worker
(:mod:`components.train_image.phases`); the training is synchronous, so every worker ends with the same
weights.
"""

from __future__ import annotations

from typing import Any

from components.train_image.data import make_dataset
from components.train_image.phases import BestEpoch
from skiff.errors import InputError
from skiff.image_data import Preprocessing

__all__ = ["DistributedTrainer"]


class DistributedTrainer:
    """The custom loop of a multi-worker run: :meth:`fit` one phase, :meth:`accuracy` on a part."""

    def __init__(self, strategy: Any, model: Any, parts: dict[str, tuple[list[str], list[int]]],
                 pre: Preprocessing, *, global_batch: int, class_weights: dict[int, float], workers: int,
                 augment: bool, seed: int) -> None:
        import tensorflow as tf

        for name, (paths, _) in parts.items():
            if len(paths) < workers:
                raise InputError(f"the {name} images ({len(paths)}) are fewer than the workers ({workers}): "
                                 "train with fewer workers or on more images")
        self._strategy = strategy
        self._model = model
        self._global_batch = global_batch
        self._class_weights = tf.constant([class_weights[i] for i in range(len(class_weights))], tf.float32)
        self._data = {name: self._distribute(paths, labels, pre, training=name == "train", augment=augment,
                                             seed=seed)
                      for name, (paths, labels) in parts.items()}
        self._eval_step: Any = None

    def _distribute(self, paths: list[str], labels: list[int], pre: Preprocessing, *, training: bool,
                    augment: bool, seed: int) -> Any:
        global_batch = self._global_batch

        def dataset_fn(ctx: Any) -> Any:
            first, every = ctx.input_pipeline_id, ctx.num_input_pipelines
            return make_dataset(paths[first::every], labels[first::every], pre,
                                batch_size=ctx.get_per_replica_batch_size(global_batch), training=training,
                                augment=augment, seed=seed)

        return self._strategy.distribute_datasets_from_function(dataset_fn)

    @staticmethod
    def _correct(y: Any, probs: Any) -> Any:
        import tensorflow as tf

        hits = tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    def _train_step(self, optimizer: Any, variables: list[Any]) -> Any:
        import keras
        import tensorflow as tf

        model, strategy, weights = self._model, self._strategy, self._class_weights
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def forward(x: Any, y: Any, step_batch: Any) -> tuple[Any, ...]:
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_image = keras.losses.sparse_categorical_crossentropy(y, probs) * tf.gather(weights, y)
                loss = tf.reduce_sum(per_image) / step_batch
                target = optimizer.scale_loss(loss) if scaled else loss
            grads = tape.gradient(target, variables)
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables,
                                                                                                strict=True)]
            return (loss, self._correct(y, probs), *grads)

        def nothing() -> tuple[Any, ...]:
            return (tf.constant(0.0), tf.constant(0.0), *[tf.zeros_like(v) for v in variables])

        def replica_step(x: Any, y: Any) -> tuple[Any, Any, Any]:
            seen = tf.cast(tf.shape(y)[0], tf.float32)
            # the images of this step on every replica: the global batch, or less in an epoch's last step
            step_batch = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, seen)
            # a worker whose shard has run out gets an empty batch: it adds nothing, but joins the all-reduce
            loss, correct, *grads = tf.cond(seen > 0, lambda: forward(x, y, step_batch), nothing)
            optimizer.apply_gradients(zip(grads, variables, strict=True))  # sums the gradients over replicas
            return loss, correct, seen

        @tf.function  # type: ignore[untyped-decorator]  # TensorFlow has no types
        def step(batch: Any) -> tuple[Any, ...]:
            out = strategy.run(replica_step, args=batch)
            return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in out)

        return step

    def _evaluate_step(self) -> Any:
        if self._eval_step is None:
            import keras
            import tensorflow as tf

            model, strategy = self._model, self._strategy

            def forward(x: Any, y: Any) -> tuple[Any, Any]:
                probs = model(x, training=False)
                return tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, probs)), self._correct(y, probs)

            def replica_step(x: Any, y: Any) -> tuple[Any, Any, Any]:
                seen = tf.cast(tf.shape(y)[0], tf.float32)
                loss, correct = tf.cond(seen > 0, lambda: forward(x, y),
                                        lambda: (tf.constant(0.0), tf.constant(0.0)))
                return loss, correct, seen

            @tf.function  # type: ignore[untyped-decorator]  # TensorFlow has no types
            def step(batch: Any) -> tuple[Any, ...]:
                out = strategy.run(replica_step, args=batch)
                return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in out)

            self._eval_step = step
        return self._eval_step

    def evaluate(self, part: str) -> tuple[float, float]:
        """(mean loss, accuracy) over every worker's share of ``part`` (the same on every worker)."""
        step = self._evaluate_step()
        loss = correct = seen = 0.0
        for batch in self._data[part]:
            batch_loss, batch_correct, batch_seen = step(batch)
            loss, correct, seen = loss + float(batch_loss), correct + float(batch_correct), seen + float(batch_seen)
        return loss / max(seen, 1.0), correct / max(seen, 1.0)

    def accuracy(self, part: str) -> float:
        return self.evaluate(part)[1]

    def fit(self, *, epochs: int, lr: Any, patience: int) -> tuple[dict[str, list[float]], int]:
        """Train the model's trainable layers for at most ``epochs`` epochs at ``lr`` (a float or a Keras
        schedule) with a new Adam optimizer; stop early on the validation accuracy and end with the best
        epoch's weights. Returns the history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``) and the
        number of epochs run."""
        import keras

        model, strategy = self._model, self._strategy
        with strategy.scope():
            optimizer = keras.optimizers.Adam(lr)
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            variables = list(model.trainable_variables)
            optimizer.build(variables)  # its slots are created here, in cross-replica context
        step = self._train_step(optimizer, variables)
        stop = BestEpoch(patience)
        history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
        for epoch in range(epochs):
            loss = correct = seen = 0.0
            for batch in self._data["train"]:
                batch_loss, batch_correct, batch_seen = step(batch)
                # the epoch's loss is the mean over its images, as model.fit reports it
                loss += float(batch_loss) * float(batch_seen)
                correct, seen = correct + float(batch_correct), seen + float(batch_seen)
            val_loss, val_accuracy = self.evaluate("val")
            for key, value in (("loss", loss / max(seen, 1.0)), ("accuracy", correct / max(seen, 1.0)),
                               ("val_loss", val_loss), ("val_accuracy", val_accuracy)):
                history[key].append(round(float(value), 5))
            if stop.update(epoch, val_accuracy, model.get_weights):
                break
        with strategy.scope():
            stop.restore(model.set_weights)
        return history, len(history["loss"])
