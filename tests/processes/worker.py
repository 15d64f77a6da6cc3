"""One process of a two-process JAX run over 127.0.0.1.

`tests/test_processes.py` starts two of these:
`python -m tests.processes.worker <process id> <probe> <port> <port>`
(the coordinator listens on the first port). Each joins
the run (gloo collectives, one CPU device per process), sets Keras's
`DataParallel` over both processes' devices, runs the probe on data of its
own, and prints the probe's result as JSON on its last line.
"""

import json
import os
import sys

import numpy as np

# Process 0's inputs reach the layer "left" at 3 times the scale of the
# layer "right"; process 1's reach "right" at twice the scale of "left".
SCALES = {0: (3.0, 1.0), 1: (1.0, 2.0)}


def local_data(process_id, n=64):
    """This process's inputs `[a, b]` and targets: other draws, and other
    scales, on each process."""
    rng = np.random.default_rng(process_id)
    a, b = (
        (rng.normal(size=(n, 4)) * scale).astype("float32")
        for scale in SCALES[process_id]
    )
    return [a, b], rng.normal(size=(n, 1)).astype("float32")


def two_branch_model():
    """`a -> DynamicDense "left"`, `b -> DynamicDense "right"`, joined:
    the same model on every process (same seed)."""
    import keras

    from keras_gradnets.layers import DynamicDense

    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    left = DynamicDense(
        8, chunks=2, activation="relu", growth_init="random", name="left"
    )(a)
    right = DynamicDense(
        8, chunks=2, activation="relu", growth_init="random", name="right"
    )(b)
    joined = keras.layers.Concatenate()([left, right])
    model = keras.Model([a, b], keras.layers.Dense(1, name="out")(joined))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def activation_std(process_id):
    """The statistics `CapacityGrowth(select="activation_std")` decides
    from, measured on this process's data."""
    from keras_gradnets import analysis

    x, _ = local_data(process_id)
    return analysis.activation_stats(two_branch_model(), x)


def grown(process_id):
    """`CapacityGrowth(select="activation_std")` in a `fit` over both
    processes, each feeding its own half of every global batch and
    measuring its own data: the model and the callback."""
    from keras_gradnets.callbacks import CapacityGrowth

    model = two_branch_model()
    x, y = local_data(process_id)
    callback = CapacityGrowth(select="activation_std", data=x, grow_at=[1])
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )
    return model, callback


def growth(process_id):
    """Which layer grew, at which step, and the weights at the end."""
    model, callback = grown(process_id)
    return {
        "events": callback.events,
        "weights": [w.tolist() for w in model.get_weights()],
    }


def gradmax(process_id):
    """`CapacityGrowth` growing a `growth_init="gradmax"` layer in a `fit`
    over both processes, each measuring the gradient on its own data: the
    weights at the end."""
    import keras

    from keras_gradnets.callbacks import CapacityGrowth
    from keras_gradnets.layers import DynamicDense

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            DynamicDense(8, chunks=2, activation="tanh", growth_init="gradmax"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    (x, _), y = local_data(process_id)
    y = np.concatenate([y, x[:, :2]], axis=1)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[1], data=(x, y))],
    )
    return {"weights": [w.tolist() for w in model.get_weights()]}


def finalize(process_id, on_every_process):
    """The grown model finalized on process 0 alone, or on both processes,
    while the distribution is set: the trained weights, and the finalized
    model's outputs on process 0's inputs."""
    import keras

    import keras_gradnets as kg

    model, _ = grown(process_id)
    result = {"weights": [w.tolist() for w in model.get_weights()]}
    if process_id == 0 or on_every_process:
        plain = kg.finalize(model)
        x, _ = local_data(0)
        # A direct call: `predict` would lay the data out over both
        # processes, as the distribution still says.
        outputs = keras.ops.convert_to_numpy(plain(x, training=False))
        result["outputs"] = outputs.tolist()
        if not on_every_process:
            # Keras's `save` creates a variable, which under the
            # distribution would wait for the other process: the one
            # process that saves unsets the distribution first.
            keras.distribution.set_distribution(None)
        path = os.path.join(os.environ["WORKER_DIR"], f"{process_id}.keras")
        plain.save(path)
        result["dynamic_layers"] = [
            layer.name
            for layer in plain.layers
            if type(layer).__name__.startswith("Dynamic")
        ]
    if on_every_process:
        # Finetuned on both processes: loaded under the distribution, the
        # plain model is laid out over both.
        plain = keras.saving.load_model(path)
        plain.compile(keras.optimizers.SGD(0.01), "mse")
        x, y = local_data(process_id)
        plain.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        result["finetuned"] = [w.tolist() for w in plain.get_weights()]
    return result


def callbacks(process_id):
    """Every callback's probe values and trained model, each process
    feeding its own rows of every global batch."""
    from tests.processes import callbacks as families

    x, y = families.local_data(process_id)
    return {
        "probes": {
            name: families.probe_values(name, families.BATCH)
            for name in families.PROBES
        },
        "trained": {
            name: families.train(name, x, y, families.BATCH)
            for name in families.FAMILIES
        },
    }


def resume(process_id):
    """Every family trained with a `ModelCheckpoint` per process (each
    saves to a path of its own), then its epoch-1 checkpoint loaded under
    the distribution and trained on from `initial_epoch=1` with a new
    callback: the uninterrupted and the resumed run."""
    import keras

    from tests.processes import callbacks as families

    x, y = families.local_data(process_id)
    results = {}
    for name in families.FAMILIES:
        path = os.path.join(
            os.environ["WORKER_DIR"], f"{name}-{process_id}-{{epoch}}.keras"
        )
        model, callback = families.trained_model(name)
        checkpoint = keras.callbacks.ModelCheckpoint(path)
        uninterrupted = families.train(
            name, x, y, families.BATCH, model, [callback, checkpoint]
        )
        _, callback = families.trained_model(name)
        resumed = families.train(
            name,
            x,
            y,
            families.BATCH,
            keras.saving.load_model(path.format(epoch=1)),
            [callback],
            initial_epoch=1,
        )
        results[name] = {"uninterrupted": uninterrupted, "resumed": resumed}
    return results


def relaid(model, name, process_id):
    """`model`, built on this process alone, saved to a path of this
    process and loaded under the distribution: laid out over every
    process, as `fit` needs."""
    import keras

    path = os.path.join(os.environ["WORKER_DIR"], f"{name}-{process_id}.keras")
    model.save(path)
    return keras.saving.load_model(path)


def gradualize(process_id, on_every_process):
    """A plain model built on every process, gradualized on process 0
    alone or on both while the distribution is set. On both, the
    gradualized model is laid out again (`relaid`) and trained with
    `GradNetScheduler` on each process's rows of every global batch."""
    import keras

    import keras_gradnets as kg
    from tests.processes import callbacks as families

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="output"),
        ]
    )
    x, y = families.local_data(process_id)
    result = {}
    if process_id == 0 or on_every_process:
        gradual = kg.gradualize(model, verbose=False)
        result["layers"] = [type(layer).__name__ for layer in gradual.layers]
        outputs = gradual(families.local_data(0)[0], training=False)
        result["outputs"] = keras.ops.convert_to_numpy(outputs).tolist()
    if on_every_process:
        gradual = relaid(gradual, "gradual", process_id)
        gradual.compile(keras.optimizers.Adam(0.05), "mse")
        gradual.fit(
            x,
            y,
            batch_size=families.BATCH,
            epochs=families.EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[kg.callbacks.GradNetScheduler(tau=6, unit="step")],
        )
        result["weights"] = [w.tolist() for w in gradual.get_weights()]
    return result


PROBES = {
    "gradualize_on_one": lambda process_id: gradualize(process_id, False),
    "gradualize_on_every": lambda process_id: gradualize(process_id, True),
    "activation_std": activation_std,
    "callbacks": callbacks,
    "resume": resume,
    "growth": growth,
    "gradmax": gradmax,
    "finalize_on_one": lambda process_id: finalize(process_id, False),
    "finalize_on_every": lambda process_id: finalize(process_id, True),
}


def main():
    process_id, probe, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    # The README's recipe: it also gives every process the same seed.
    keras.distribution.initialize(f"127.0.0.1:{port}", 2, process_id)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    # Each process feeds its own part of every global batch.
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    print(json.dumps(PROBES[probe](process_id)), flush=True)


if __name__ == "__main__":
    main()
