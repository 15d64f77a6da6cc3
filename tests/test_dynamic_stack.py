"""DynamicStack: depth growth by stacking, skipped blocks, finalize."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets as kg
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicStack
from keras_gradnets.layers import link_dynamic_layers

CALLS = {}


@keras.saving.register_keras_serializable(package="tests")
class CountingBlock(keras.layers.Layer):
    """`x + tanh(x W + b)`, counting its calls (traces, or eager steps)."""

    def build(self, input_shape):
        self.dense = keras.layers.Dense(input_shape[-1], activation="tanh")
        self.dense.build(input_shape)

    def call(self, x):
        CALLS[id(self)] = CALLS.get(id(self), 0) + 1
        return x + self.dense(x)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, np.sin(x.sum(axis=1, keepdims=True)).astype("float32")


def _model(depth=4, initial_depth=1, optimizer="adam", seed=1, placement="top"):
    keras.utils.set_random_seed(seed)
    stack = DynamicStack(
        CountingBlock(),
        depth=depth,
        initial_depth=initial_depth,
        placement=placement,
        name="stack",
    )
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8), stack, keras.layers.Dense(1)]
    )
    model.compile(optimizer, "mse")
    return model, stack


def _np(x):
    return ops.convert_to_numpy(x)


def test_inactive_blocks_are_skipped_and_growth_keeps_the_function():
    x, y = _data()
    model, stack = _model()
    CALLS.clear()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    called = [CALLS.get(id(block), 0) for block in stack.blocks]
    assert called[0] > 0 and called[1:] == [0, 0, 0]
    before = _np(model.predict(x, verbose=0))
    assert stack.grow(2) == 2
    assert stack.active_blocks == 3 and stack.capacity == 0.75
    # G_stack: the trained block is copied on top, behind gates at 0.
    for block in stack.blocks[1:3]:
        for new, old in zip(
            block.get_weights(), stack.blocks[0].get_weights(), strict=True
        ):
            np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(_np(stack.gates)[1:], [0, 0, 0])
    np.testing.assert_allclose(
        _np(model.predict(x, verbose=0)), before, atol=1e-6
    )
    CALLS.clear()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    called = [CALLS.get(id(block), 0) for block in stack.blocks]
    assert min(called[:3]) > 0 and called[3] == 0
    # The new blocks' gates learn: the grown network is not the old one.
    assert np.all(_np(stack.gates)[1:3] != 0)


def test_inactive_blocks_are_held_exactly_by_the_optimizer():
    x, y = _data()
    model, stack = _model(optimizer=keras.optimizers.AdamW(weight_decay=0.1))
    link_dynamic_layers(model)
    idle = [_np(v).copy() for v in stack.blocks[2].trainable_variables]
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for old, variable in zip(
        idle, stack.blocks[2].trainable_variables, strict=True
    ):
        np.testing.assert_array_equal(old, _np(variable))
    slots = [
        _np(v)
        for v in model.optimizer.variables
        if "stack" in v.path and "dense" in v.path
    ]
    assert slots and any(np.any(s) for s in slots)


def test_capacity_growth_grows_a_stack_on_a_budget():
    x, y = _data()
    model, stack = _model()
    growth = CapacityGrowth(grow_at=[1, 2])
    history = model.fit(
        x, y, epochs=3, batch_size=16, verbose=0, callbacks=[growth]
    )
    assert [e["epoch"] for e in growth.events] == [0, 1]
    assert history.history["capacity"] == [0.5, 0.75, 0.75]
    assert stack.active_blocks == 3


def test_a_growth_adds_blocks_per_growth_blocks():
    # G_stack doubles the depth: the trained stack copied on top at once.
    x, y = _data()
    keras.utils.set_random_seed(1)
    stack = DynamicStack(
        CountingBlock(), depth=4, initial_depth=2, blocks_per_growth=2
    )
    model = keras.Sequential([keras.Input((5,)), stack])
    model.compile("adam", "mse")
    model.fit(
        x, x, epochs=2, verbose=0, callbacks=[CapacityGrowth(grow_at=[2])]
    )
    assert stack.active_blocks == 4
    for new, old in ((2, 0), (3, 1)):
        for a, b in zip(
            stack.blocks[new].get_weights(),
            stack.blocks[old].get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    config = stack.get_config()
    assert config["blocks_per_growth"] == 2
    assert DynamicStack.from_config(config).blocks_per_growth == 2


def test_grown_gate_one_stacks_as_g_stack():
    # Gate 1: the grown stack computes the copied blocks in full, so its
    # output is that of the trained blocks run twice.
    x, _ = _data()
    keras.utils.set_random_seed(1)
    stack = DynamicStack(
        CountingBlock(), depth=4, initial_depth=2, grown_gate=1.0
    )
    stack.build((None, 5))
    twice = stack(stack(x))
    stack.grow(2)
    np.testing.assert_array_equal(_np(stack.gates), [1, 1, 1, 1])
    np.testing.assert_allclose(_np(stack(x)), _np(twice), atol=1e-5)
    assert DynamicStack.from_config(stack.get_config()).grown_gate == 1.0


def test_finalize_gives_the_active_blocks_as_plain_layers():
    x, y = _data()
    model, stack = _model()
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[1])],
    )
    plain = kg.finalize(model)
    assert not any(
        isinstance(layer, DynamicStack) for layer in plain._flatten_layers()
    )
    assert plain.count_params() < model.count_params()
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)),
        _np(model.predict(x, verbose=0)),
        atol=1e-5,
    )


def test_save_mid_growth_and_resume_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    fit = dict(batch_size=16, shuffle=False, verbose=0)
    full, _ = _model()
    full.fit(x, y, epochs=4, callbacks=[CapacityGrowth(grow_at=[2])], **fit)
    first, _ = _model()
    first.fit(x, y, epochs=3, callbacks=[CapacityGrowth(grow_at=[2])], **fit)
    path = str(tmp_path / "mid.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert resumed.get_layer("stack").active_blocks == 2
    resumed.fit(
        x,
        y,
        epochs=4,
        initial_epoch=3,
        callbacks=[CapacityGrowth(grow_at=[2])],
        **fit,
    )
    assert resumed.get_layer("stack").active_blocks == 2
    for a, b in zip(full.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_weights_of_another_depth_set_that_depth():
    x, _ = _data()
    shallow, _ = _model(seed=1)
    deep, deep_stack = _model(seed=2)
    deep_stack.grow(2)
    shallow.predict(x, verbose=0)
    shallow.set_weights(deep.get_weights())
    assert shallow.get_layer("stack").active_blocks == 3
    np.testing.assert_allclose(
        _np(shallow.predict(x, verbose=0)),
        _np(deep.predict(x, verbose=0)),
        atol=1e-6,
    )


def _run_in_order(stack, x, gates=None):
    """The stack's output computed by hand from `block_order` and `gates`
    (defaults to the stack's gates)."""
    gates = _np(stack.gates) if gates is None else gates
    x = ops.convert_to_tensor(x)
    for i in stack.block_order:
        h = stack.blocks[i](x)
        x = x + float(gates[i]) * (h - x)
    return _np(x)


def test_middle_placement_inserts_copies_of_the_middle_block():
    x, y = _data()
    model, stack = _model(depth=5, initial_depth=2, placement="middle")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert stack.block_order == (0, 1)
    before = _np(model.predict(x, verbose=0))
    # MIDAS: the middle block is copied and the copy enters after it.
    assert stack.grow() == 1
    assert stack.block_order == (0, 2, 1)
    assert stack.grow() == 1
    assert stack.block_order == (0, 2, 3, 1)
    for i in (2, 3):
        for new, old in zip(
            stack.blocks[i].get_weights(),
            stack.blocks[0].get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(new, old)
    np.testing.assert_allclose(
        _np(model.predict(x, verbose=0)), before, atol=1e-6
    )
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[1])],
    )
    assert stack.block_order == (0, 2, 4, 3, 1)
    hidden = _np(model.layers[0](x))
    np.testing.assert_allclose(
        _np(stack(hidden)), _run_in_order(stack, hidden), atol=1e-5
    )
    plain = kg.finalize(model)
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)),
        _np(model.predict(x, verbose=0)),
        atol=1e-5,
    )


def test_middle_placement_survives_save_and_load(tmp_path):
    x, y = _data()
    model, stack = _model(depth=5, initial_depth=2, placement="middle")
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[1, 2])],
    )
    path = str(tmp_path / "middle.keras")
    model.save(path)
    loaded = keras.saving.load_model(path).get_layer("stack")
    assert loaded.placement == "middle"
    assert loaded.block_order == stack.block_order == (0, 2, 3, 1)
    hidden = _np(model.layers[0](x))
    np.testing.assert_allclose(
        _np(loaded(hidden)), _np(stack(hidden)), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(block=CountingBlock(), depth=3, placement="bottom"), "placem"),
        (dict(block=CountingBlock(), depth=3, blocks_per_growth=0), "per_gr"),
        (dict(block=CountingBlock(), depth=3, grown_gate=1.5), "grown_gate"),
        (dict(block=CountingBlock(), depth=1), "depth"),
        (dict(block=CountingBlock(), depth=3, initial_depth=4), "initial_"),
        (dict(block="dense", depth=3), "block"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicStack(**kwargs)


def test_a_block_that_changes_the_shape_is_refused():
    stack = DynamicStack(keras.layers.Dense(3), depth=2)
    with pytest.raises(ValueError, match="shape of its input"):
        stack.build((None, 8))


def test_capacity_growth_refuses_to_freeze_a_stack():
    x, y = _data()
    model, stack = _model()
    with pytest.raises(ValueError, match="freeze"):
        model.fit(
            x, y, epochs=1, verbose=0, callbacks=[CapacityGrowth(freeze=True)]
        )
    assert stack.active_blocks == 1


def test_a_stack_of_keras_hub_transformer_encoders_grows_and_finalizes():
    import keras_hub

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 8)).astype("float32")
    y = rng.normal(size=(16, 6, 8)).astype("float32")
    keras.utils.set_random_seed(0)
    block = keras_hub.layers.TransformerEncoder(
        intermediate_dim=16, num_heads=2, dropout=0.1
    )
    stack = DynamicStack(block, depth=4, initial_depth=2)
    model = keras.Sequential([keras.Input((6, 8)), stack])
    model.compile("adam", "mse")
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[1])],
    )
    assert stack.active_blocks == 3
    before = _np(model.predict(x, verbose=0))
    stack.grow()
    np.testing.assert_allclose(
        _np(model.predict(x, verbose=0)), before, atol=1e-5
    )
    plain = kg.finalize(model)
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)), before, atol=1e-5
    )


def _ramped(ramp_steps=4, seed=1, steps_per_execution=1):
    keras.utils.set_random_seed(seed)
    stack = DynamicStack(
        CountingBlock(),
        depth=3,
        initial_depth=1,
        grown_gate=1.0,
        ramp_steps=ramp_steps,
        name="stack",
    )
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8), stack, keras.layers.Dense(1)]
    )
    model.compile(
        keras.optimizers.SGD(0.1),
        "mse",
        steps_per_execution=steps_per_execution,
    )
    return model, stack


def test_a_ramped_block_enters_at_zero_inside_the_train_step():
    # Blocks active from the start have run their ramp. A grown block's
    # ramp is 0 in the first train step after the growth, so the block gets
    # no gradient; in the second it is 1/4, and the block learns. Plain
    # SGD: a zero gradient moves nothing.
    x, y = _data(n=16)
    model, stack = _ramped()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    before = _np(model.predict(x, verbose=0))
    stack.grow()
    np.testing.assert_array_equal(_np(stack.ramp_counts), [4, 0, 0])
    np.testing.assert_allclose(
        _np(model.predict(x, verbose=0)), before, atol=1e-6
    )
    grown = [_np(v).copy() for v in stack.blocks[1].trainable_variables]
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(_np(stack.ramp_counts), [4, 1, 0])
    for old, variable in zip(
        grown, stack.blocks[1].trainable_variables, strict=True
    ):
        np.testing.assert_array_equal(old, _np(variable))
    assert _np(stack.gates)[1] == 1.0
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(_np(stack.ramp_counts), [4, 2, 0])
    moved = [
        np.any(old != _np(variable))
        for old, variable in zip(
            grown, stack.blocks[1].trainable_variables, strict=True
        )
    ]
    assert all(moved) and _np(stack.gates)[1] != 1.0


def test_a_ramp_ends_at_the_gate_and_finalizes_equal_on_the_way():
    x, y = _data()
    model, stack = _ramped(ramp_steps=6)
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[1])],
    )
    # Grown after epoch 0's 4 steps, then 8 steps of a 6-step ramp.
    np.testing.assert_array_equal(_np(stack.ramp_counts)[:2], [6, 6])
    hidden = _np(model.layers[0](x))
    np.testing.assert_allclose(
        _np(stack(hidden)), _run_in_order(stack, hidden), atol=1e-5
    )
    # Several steps per execution count one by one (torch runs one).
    per_execution = 1 if keras.backend.backend() == "torch" else 2
    model, stack = _ramped(ramp_steps=6, steps_per_execution=per_execution)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    stack.grow()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(_np(stack.ramp_counts)[:2], [6, 4])
    hidden = _np(model.layers[0](x))
    ramp = np.array([1.0, 4 / 6, 0.0])
    expected = _run_in_order(stack, hidden, _np(stack.gates) * ramp)
    np.testing.assert_allclose(_np(stack(hidden)), expected, atol=1e-5)
    plain = kg.finalize(model)
    np.testing.assert_allclose(
        _np(plain.predict(x, verbose=0)),
        _np(model.predict(x, verbose=0)),
        atol=1e-5,
    )


def test_save_mid_ramp_and_resume_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    fit = dict(batch_size=16, shuffle=False, verbose=0)
    full, _ = _ramped(ramp_steps=10)
    full.fit(x, y, epochs=4, callbacks=[CapacityGrowth(grow_at=[1])], **fit)
    first, stack = _ramped(ramp_steps=10)
    first.fit(x, y, epochs=2, callbacks=[CapacityGrowth(grow_at=[1])], **fit)
    np.testing.assert_array_equal(_np(stack.ramp_counts)[:2], [10, 4])
    path = str(tmp_path / "ramp.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert resumed.get_layer("stack").ramp_steps == 10
    resumed.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        callbacks=[CapacityGrowth(grow_at=[1])],
        **fit,
    )
    for a, b in zip(full.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_bad_ramp_steps():
    with pytest.raises(ValueError, match="ramp_steps"):
        DynamicStack(CountingBlock(), depth=3, ramp_steps=-1)
    with pytest.raises(ValueError, match="ramp_steps"):
        DynamicStack(CountingBlock(), depth=3, ramp_steps=2.5)
