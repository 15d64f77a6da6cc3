"""Every callback in a run over two processes, and the same run on one.

Two kinds of model per callback. A *probe* model's mean output is the
value the compiled step used (read by `LastBatchMean`), so the steps'
values compare across processes and with one process. A *trained* model
(Adam, a tanh regression) compares its weights, its epoch logs and its
growth events. Each process feeds its own rows of every global batch:
`local_data(process_id)`; one process feeds `global_data()`, the same
global batches in one array.
"""

import numpy as np

BATCH = 8  # rows per process in every step
ROWS = 32  # rows per process: 4 steps per epoch
EPOCHS = 2


def local_data(process_id):
    """This process's inputs and targets (other draws on each process)."""
    rng = np.random.default_rng(10 + process_id)
    x = rng.normal(size=(ROWS, 4)).astype("float32")
    return x, np.tanh(x[:, :1] - x[:, 1:2])


def global_data():
    """Both processes' rows in the order of the global batches: batch `i`
    is process 0's `i`-th batch, then process 1's."""
    parts = [local_data(i) for i in range(2)]
    order = [
        (process_id, start)
        for start in range(0, ROWS, BATCH)
        for process_id in range(2)
    ]
    return tuple(
        np.concatenate(
            [parts[p][k][start : start + BATCH] for p, start in order]
        )
        for k in range(2)
    )


# Probe models: the mean output is the value the step used ------------------


def _gradnet_probe():
    import keras

    import keras_gradnets as kg

    # Inputs of -1 through a unit kernel: GReLU outputs g - 1.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer="ones"),
            kg.layers.GReLU(),
        ]
    )
    return model, kg.callbacks.GradNetScheduler(tau=6, unit="step"), -0.25


def _dropin_probe():
    import keras

    import keras_gradnets as kg

    # The mean output is the share of units taken from the new branch.
    inputs = keras.Input((4,))
    skip = keras.layers.Dense(64, trainable=False, kernel_initializer="zeros")
    new = keras.layers.Dense(64, trainable=False, kernel_initializer="ones")
    x = kg.layers.DropIn(seed=3)([skip(inputs), new(inputs)])
    model = keras.Model(inputs, x)
    return model, kg.callbacks.DropInScheduler(dropin_length=6), 0.25


def _mollifier_probe():
    import keras

    import keras_gradnets as kg

    # Zero kernel, deterministic skip: each output is p times its input.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            kg.layers.MollifiedDense(
                4, "relu", kernel_initializer="zeros", deterministic=True
            ),
        ]
    )
    scheduler = kg.callbacks.MollifierScheduler(
        kg.schedules.LinearDecay(8), use_loss=False
    )
    return model, scheduler, 1.0


def _growth_probe():
    import keras

    import keras_gradnets as kg

    # A unit kernel on inputs of 1/4: the mean output is the active share
    # of the 4 units. Nothing counts as an improvement: a growth every
    # second step.
    model = keras.Sequential(
        [
            keras.Input((4,)),
            kg.layers.DynamicDense(
                4,
                chunks=4,
                initial_chunks=1,
                kernel_initializer="ones",
                bias_initializer="zeros",
                growth_init="random",
            ),
        ]
    )
    growth = kg.callbacks.CapacityGrowth(
        unit="step", window=1, patience=0, min_delta=1e9
    )
    return model, growth, 0.25


def _temperature_probe():
    import keras_gradnets as kg
    from tests.helpers import TemperatureProbe
    from tests.helpers import temperature_probe_model

    model = temperature_probe_model(TemperatureProbe(name="probe"))
    # The probe model reads 3 inputs: the first 3 of the 4.
    return model, kg.callbacks.TemperatureScheduler(1.0, 1e-2), 1.0


PROBES = {
    "gradnet": _gradnet_probe,
    "dropin": _dropin_probe,
    "mollifier": _mollifier_probe,
    "growth": _growth_probe,
    "temperature": _temperature_probe,
}


def probe_values(name, rows):
    """The value each compiled step of probe `name` used, training on
    `rows` rows per step (of a constant input): a list, one per step."""
    import keras

    from tests.helpers import BatchRecorder
    from tests.helpers import LastBatchMean

    keras.utils.set_random_seed(0)
    model, callback, fill = PROBES[name]()
    model.compile(
        keras.optimizers.SGD(0.0),
        "mse",
        metrics=[LastBatchMean(aggregation="mean")],
    )
    width = model.input_shape[-1]
    x = np.full((rows * ROWS // BATCH, width), fill, "float32")
    recorder = BatchRecorder("last_mean")
    model.fit(
        x,
        np.zeros((len(x), model.output_shape[-1]), "float32"),
        batch_size=rows,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[callback, recorder],
    )
    return recorder.values


# Trained models: weights, logs and growth events ---------------------------


def _gradnet(inputs):
    import keras

    import keras_gradnets as kg

    x = keras.layers.Dense(8, name="dense")(inputs)
    x = kg.layers.GReLU(name="grelu")(x)
    x = kg.layers.GradualDropout(0.3, seed=1, name="dropout")(x)
    return x, kg.callbacks.GradNetScheduler(tau=6, unit="step")


def _dropin(inputs):
    import keras

    import keras_gradnets as kg

    skip = keras.layers.Dense(8)(inputs)
    new = keras.layers.Dense(8, activation="relu")(inputs)
    x = kg.layers.DropIn(seed=2)([skip, new])
    return x, kg.callbacks.DropInScheduler(dropin_length=6)


def _mollifier(inputs):
    import keras_gradnets as kg

    x = kg.layers.MollifiedDense(8, "tanh", seed=3)(inputs)
    # The noise follows the global loss each process reads from its logs.
    scheduler = kg.callbacks.MollifierScheduler(kg.schedules.LinearDecay(8))
    return x, scheduler


def _growth(unit):
    def family(inputs):
        import keras_gradnets as kg

        x = kg.layers.DynamicDense(
            8,
            chunks=4,
            initial_chunks=1,
            growth_init="random",
            name="dynamic",
        )(inputs)
        # A plateau on the global loss every process reads from its logs
        # (by epoch, nothing counts as an improvement).
        growth = kg.callbacks.CapacityGrowth(
            unit=unit,
            window=1 if unit == "epoch" else 2,
            patience=0,
            min_delta=1e9 if unit == "epoch" else 0.05,
        )
        return x, growth

    return family


def _temperature(inputs):
    import keras

    import keras_gradnets as kg

    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = kg.layers.ConcreteWidth(seed=4, name="width")(x)
    return x, kg.callbacks.TemperatureScheduler(1.0, 0.1)


FAMILIES = {
    "gradnet": _gradnet,
    "dropin": _dropin,
    "mollifier": _mollifier,
    "growth_step": _growth("step"),
    "growth_epoch": _growth("epoch"),
    "temperature": _temperature,
}


def trained_model(name):
    """Family `name`'s model (the same weights on every process) and its
    callback."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden, callback = FAMILIES[name](inputs)
    output = keras.layers.Dense(1, name="output")(hidden)
    model = keras.Model(inputs, output, name=name)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model, callback


def train(name, x, y, rows, model=None, callbacks=None, initial_epoch=0):
    """Fits family `name`'s model (or `model` with `callbacks`, resumed at
    `initial_epoch`) to `EPOCHS`: its weights, epoch logs and growth
    events, as JSON-ready lists."""
    if model is None:
        model, callback = trained_model(name)
        callbacks = [callback]
    history = model.fit(
        x,
        y,
        batch_size=rows,
        epochs=EPOCHS,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    events = getattr(callbacks[0], "events", [])
    return {
        "weights": [w.tolist() for w in model.get_weights()],
        "logs": {
            k: [float(v) for v in vs] for k, vs in history.history.items()
        },
        "events": [
            {"step": event["step"], "layers": event["layers"]}
            for event in events
        ],
    }
