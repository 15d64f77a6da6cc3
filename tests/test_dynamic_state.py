"""Dynamic capacity is never stale: every path that changes it, on every
backend, reaches the next train, test and predict step, or raises."""

import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicDense
from keras_gradnets.layers import link_dynamic_layers
from tests.helpers import BACKEND
from tests.helpers import CrashAt
from tests.test_dynamic import FeedLoss
from tests.test_dynamic import _data
from tests.test_dynamic import _mlp


def _np(x):
    return ops.convert_to_numpy(x)


def _capacity(model):
    return [
        (layer.active_units, layer.frozen_units) for layer in model.layers[:2]
    ]


def _assert_steps_use_reported_capacity(model, x):
    """predict and evaluate agree with an eager call at today's capacity."""
    eager = _np(model(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), eager, atol=1e-5)
    for layer in model.layers[:2]:
        # Inactive units are exactly zero at the reported capacity.
        hidden = keras.Model(model.inputs, layer.output)
        out = hidden.predict(x, verbose=0)
        assert (out[:, layer.active_units :] == 0).all()
        assert (np.abs(out[:, : layer.active_units]).sum(axis=0) > 0).all()


# 2. Growing by hand between two fits ---------------------------------------


def test_growing_a_model_that_ran_unlinked_takes_effect_in_the_next_steps():
    x, y = _data()
    model = _mlp()
    model.fit(x, y, epochs=1, verbose=0)
    model.layers[0].grow()
    assert _capacity(model)[0] == (4, 2)
    model.fit(x, y, epochs=1, verbose=0)
    _assert_steps_use_reported_capacity(model, x)


def test_growing_by_hand_between_fits_takes_effect_in_the_next_steps():
    x, y = _data()
    model = _mlp(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    link_dynamic_layers(model)
    model.fit(x, y, epochs=1, verbose=0)
    first = model.layers[0]
    first.grow()
    assert _capacity(model)[0] == (4, 2)
    frozen = _np(first.kernels[0]).copy()
    new = _np(first.kernels[1]).copy()
    model.fit(x, y, epochs=2, verbose=0)
    np.testing.assert_array_equal(_np(first.kernels[0]), frozen)
    assert np.abs(_np(first.kernels[1]) - new).max() > 1e-4
    _assert_steps_use_reported_capacity(model, x)


# 3. load_weights of a checkpoint at another capacity -----------------------


def test_load_weights_at_another_capacity_is_used_by_the_next_steps(tmp_path):
    x, y = _data()
    model = _mlp()
    link_dynamic_layers(model)
    model.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "small.weights.h5")
    model.save_weights(path)
    before = model.predict(x, verbose=0)
    for layer in model.layers[:2]:
        layer.grow(2)
    model.fit(x, y, epochs=1, verbose=0)
    assert _capacity(model) == [(6, 2), (6, 2)]
    model.load_weights(path)
    assert _capacity(model) == [(2, 0), (2, 0)]
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    _assert_steps_use_reported_capacity(model, x)


def test_another_capacity_loads_into_a_model_that_ran_unlinked(tmp_path):
    x, y = _data()
    grown = _mlp()
    for layer in grown.layers[:2]:
        layer.grow()
    path = os.path.join(tmp_path, "grown.weights.h5")
    grown.save_weights(path)
    model = _mlp()
    model.predict(x, verbose=0)
    model.load_weights(path)
    assert _capacity(model) == [(4, 2), (4, 2)]
    np.testing.assert_allclose(
        model.predict(x, verbose=0), grown.predict(x, verbose=0), atol=1e-5
    )
    _assert_steps_use_reported_capacity(model, x)


def test_model_set_weights_at_another_capacity_into_a_model_that_ran():
    x, y = _data()
    grown = _mlp()
    for layer in grown.layers[:2]:
        layer.grow()
    model = _mlp()
    model.predict(x, verbose=0)
    model.set_weights(grown.get_weights())
    assert _capacity(model) == [(4, 2), (4, 2)]
    np.testing.assert_allclose(
        model.predict(x, verbose=0), grown.predict(x, verbose=0), atol=1e-5
    )
    _assert_steps_use_reported_capacity(model, x)


# Refusals leave everything as it was ---------------------------------------

VARS_OF_FIRST = "layers/dynamic_dense/vars"


def test_assigning_a_capacity_that_is_no_chunk_boundary_is_refused():
    x, y = _data()
    model = _mlp()
    model.fit(x, y, epochs=1, verbose=0)
    layer = model.layers[0]
    before = _everything(model, x)
    variable = next(v for v in layer.weights if v.name == "active_units")
    with pytest.raises(ValueError, match="active_units.*chunk boundary"):
        variable.assign(np.int32(3))
    _assert_unchanged(before, _everything(model, x))


def _everything(model, x):
    return (
        [np.array(w) for w in model.get_weights()],
        _capacity(model),
        model.predict(x, verbose=0),
    )


def _assert_unchanged(before, after):
    weights, capacity, predictions = before
    assert after[1] == capacity
    for old, new in zip(weights, after[0], strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(after[2], predictions)


def _layer_weights_with(layer, name, value):
    """`layer.get_weights()` with the capacity variable `name` replaced."""
    weights = layer.get_weights()
    index = [v.name for v in layer.weights].index(name)
    weights[index] = np.asarray(value, weights[index].dtype)
    return weights


@pytest.mark.parametrize(
    "active, frozen", [(3, 0), (2, 4), (10, 0), (0, 0), (4, -2)]
)
def test_a_refused_capacity_leaves_everything_as_it_was(
    tmp_path, active, frozen
):
    x, y = _data()
    model = _mlp()
    model.fit(x, y, epochs=1, verbose=0)
    layer = model.layers[0]
    weights = layer.get_weights()
    weights = _layer_weights_with(layer, "active_units", active)
    names = [v.name for v in layer.weights]
    weights[names.index("frozen_units")] = np.asarray(frozen, "int32")
    # Every kernel differs, so a partial write would show.
    weights = [w if w.dtype.kind == "i" else w + 1.0 for w in weights]
    before = _everything(model, x)
    with pytest.raises(ValueError, match="units"):
        layer.set_weights(weights)
    _assert_unchanged(before, _everything(model, x))
    with pytest.raises(ValueError, match="units"):
        layer.set_capacity(active, frozen)
    _assert_unchanged(before, _everything(model, x))
    # A saved file with a bad capacity in a layer: its store is refused
    # before any of its variables is written.
    path = os.path.join(tmp_path, "bad.weights.h5")
    model.save_weights(path)
    with __import__("h5py").File(path, "r+") as f:
        group = f[VARS_OF_FIRST]
        group[str(names.index("active_units"))][()] = active
        group[str(names.index("frozen_units"))][()] = frozen
        for i, w in enumerate(weights):
            if w.dtype.kind != "i":
                group[str(i)][...] = w
    before = _everything(model, x)
    with pytest.raises(ValueError, match="units"):
        model.load_weights(path)
    _assert_unchanged(before, _everything(model, x))


# 4. model.set_weights and EarlyStopping(restore_best_weights) ---------------


def test_model_set_weights_sets_the_capacity(tmp_path):
    x, y = _data()
    model = _mlp()
    link_dynamic_layers(model)
    model.fit(x, y, epochs=1, verbose=0)
    weights = model.get_weights()
    before = model.predict(x, verbose=0)
    for layer in model.layers[:2]:
        layer.grow()
    model.fit(x, y, epochs=1, verbose=0)
    model.set_weights(weights)
    assert _capacity(model) == [(2, 0), (2, 0)]
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    _assert_steps_use_reported_capacity(model, x)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert _capacity(loaded) == [(2, 0), (2, 0)]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-5)


def test_early_stopping_restores_the_capacity_of_the_best_epoch():
    x, y = _data()
    model = _mlp()
    # The layers grow at epochs 1 and 3 (a fresh search needs two values);
    # the loss is best at epoch 1.
    stop = keras.callbacks.EarlyStopping(
        "loss", patience=10, restore_best_weights=True
    )
    growth = CapacityGrowth(window=1, patience=0, min_delta=1e9, freeze=True)
    model.fit(
        x,
        y,
        epochs=5,
        verbose=0,
        callbacks=[FeedLoss([1.0, 0.1, 1.0, 1.0, 1.0]), growth, stop],
    )
    assert [e["epoch"] for e in growth.events] == [1, 3]
    assert stop.best_epoch == 1
    # The weights of epoch 1 were taken after its growth.
    assert _capacity(model) == [(4, 2), (4, 2)]
    _assert_steps_use_reported_capacity(model, x)


# 5. BackupAndRestore keeps the capacity and the plateau search -------------


# Scripted losses: with a window of 2 and a patience of 2 the layers grow at
# epochs 4 and 7; a run that lost the window and the wait count at the end
# of epoch 3 would grow at epoch 8 only.
LOSSES = [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85]


def _growth():
    return CapacityGrowth(
        window=2, patience=2, min_relative_delta=0, freeze=True
    )


def test_backup_and_restore_resumes_capacity_and_plateau_state(tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(1)
    model = _mlp()
    reference = _growth()
    model.fit(
        x,
        y,
        epochs=len(LOSSES),
        verbose=0,
        callbacks=[FeedLoss(LOSSES), reference],
    )
    backup = os.path.join(tmp_path, "backup")
    keras.utils.set_random_seed(1)
    model = _mlp()
    with pytest.raises(RuntimeError, match="Interrupted"):
        model.fit(
            x,
            y,
            epochs=len(LOSSES),
            verbose=0,
            callbacks=[
                FeedLoss(LOSSES),
                _growth(),
                keras.callbacks.BackupAndRestore(backup),
                CrashAt(4),
            ],
        )
    # A new process would build a new model: the backup holds all state.
    keras.utils.set_random_seed(2)
    model = _mlp()
    resumed = _growth()
    model.fit(
        x,
        y,
        epochs=len(LOSSES),
        verbose=0,
        callbacks=[
            FeedLoss(LOSSES),
            resumed,
            keras.callbacks.BackupAndRestore(backup),
        ],
    )
    assert [e["epoch"] for e in reference.events] == [4, 7]
    assert resumed.events == reference.events
    assert resumed.plateau.get_state() == reference.plateau.get_state()
    assert _capacity(model) == [(6, 4), (6, 4)]


def test_keras_save_keeps_the_plateau_state(tmp_path):
    x, y = _data()
    model = _mlp()
    growth = _growth()
    model.fit(x, y, epochs=5, verbose=0, callbacks=[FeedLoss(LOSSES), growth])
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    resumed = _growth()
    loaded.fit(
        x,
        y,
        epochs=len(LOSSES),
        initial_epoch=5,
        verbose=0,
        callbacks=[FeedLoss(LOSSES), resumed],
    )
    assert [e["epoch"] for e in resumed.events] == [4, 7]


def _plain_readers_mlp(growth_init):
    """Two dynamic layers, the second read by a plain `Dense` (whose rows
    for new units `growth_init="random"` draws)."""
    return keras.Sequential(
        [
            keras.Input((5,)),
            DynamicDense(8, chunks=4, activation="tanh", name="first"),
            DynamicDense(
                8,
                chunks=4,
                activation="tanh",
                growth_init=growth_init,
                name="second",
            ),
            keras.layers.Dense(1, name="head"),
        ]
    )


@pytest.mark.parametrize(
    "growth_init", ["function_preserving", "gradmax", "random"]
)
def test_a_checkpoint_loaded_in_a_new_model_grows_as_the_run_would(
    growth_init, tmp_path
):
    # Growths at steps 3 and 6 draw new weights: the reloaded model draws
    # the same ones, whatever the global seed of the resuming process.
    x, y = _data()

    def fit(model, initial_epoch=0, checkpoint=()):
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            initial_epoch=initial_epoch,
            shuffle=False,
            verbose=0,
            callbacks=[
                CapacityGrowth(unit="step", grow_at=[3, 6], data=(x, y)),
                *checkpoint,
            ],
        )
        return model

    keras.utils.set_random_seed(1)
    model = _plain_readers_mlp(growth_init)
    model.compile("adam", "mse")
    path = os.path.join(tmp_path, "epoch-{epoch}.keras")
    fit(model, checkpoint=[keras.callbacks.ModelCheckpoint(path)])
    keras.utils.set_random_seed(2)
    resumed = fit(keras.saving.load_model(path.format(epoch=1)), 1)
    for a, b in zip(resumed.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert _capacity(resumed) == _capacity(model) == [(6, 0), (6, 0)]


# 7. Misconfiguration is never silent ----------------------------------------


def test_a_monitor_missing_from_the_logs_is_warned_about_by_name():
    x, y = _data()
    with pytest.warns(UserWarning, match="`val_los`.*not available.*loss"):
        _mlp().fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[CapacityGrowth(monitor="val_los")],
        )


def test_a_present_monitor_gives_no_warning():
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _mlp().fit(
            x,
            y,
            epochs=2,
            verbose=0,
            validation_data=(x, y),
            callbacks=[CapacityGrowth(monitor="val_loss")],
        )


@pytest.mark.skipif(BACKEND == "torch", reason="steps_per_execution: TF/JAX")
def test_steps_per_execution_gives_per_call_means_of_the_loss():
    x, y = _data(128)
    model = _mlp()
    model.compile("adam", "mse", steps_per_execution=4)
    growth = CapacityGrowth(unit="step", window=1, patience=1000)
    seen = []
    update = growth.plateau.update
    growth.plateau.update = lambda value: seen.append(value) or update(value)
    history = model.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[growth]
    )
    # 16 steps an epoch in calls of 4: four values an epoch, each the mean
    # loss of its four steps, never negative for an MSE.
    assert len(seen) == 8
    assert min(seen) >= 0
    for epoch in range(2):
        assert np.mean(seen[4 * epoch : 4 * epoch + 4]) == pytest.approx(
            history.history["loss"][epoch], rel=1e-4
        )


# Freeze and grow is the network a user would write by hand ------------------


def test_freeze_and_grow_equals_the_same_network_in_plain_keras():
    x, y = _data(64)
    dynamic = keras.Sequential(
        [
            keras.Input((5,)),
            DynamicDense(4, chunks=2, activation="tanh", name="hidden"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    dynamic.compile(keras.optimizers.SGD(0.05), "mse")
    link_dynamic_layers(dynamic)
    dynamic.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    hidden = dynamic.get_layer("hidden")
    hidden.grow()
    assert (hidden.active_units, hidden.frozen_units) == (4, 2)
    # The same network in plain Keras: the trained half as a frozen Dense.
    inputs = keras.Input((5,))
    frozen = keras.layers.Dense(2, activation="tanh", trainable=False)
    new = keras.layers.Dense(2, activation="tanh")
    out = keras.layers.Dense(1)
    plain = keras.Model(
        inputs,
        out(keras.layers.Concatenate()([frozen(inputs), new(inputs)])),
    )
    frozen.set_weights([_np(hidden.kernels[0]), _np(hidden.biases[0])])
    new.set_weights([_np(hidden.kernels[1]), _np(hidden.biases[1])])
    out.set_weights(dynamic.get_layer("out").get_weights())
    plain.compile(keras.optimizers.SGD(0.05), "mse")
    kwargs = dict(batch_size=16, epochs=3, shuffle=False, verbose=0)
    expected = plain.fit(x, y, **kwargs).history["loss"]
    losses = dynamic.fit(x, y, **kwargs).history["loss"]
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    np.testing.assert_allclose(
        dynamic.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-4
    )
