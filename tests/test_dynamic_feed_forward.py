"""DynamicFeedForward: the feed-forward width of keras-hub transformer
blocks grows inside `fit`, keeping the function, and finalizes to the
block's own class at the grown width."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicFeedForward
from keras_gradnets.layers import link_dynamic_layers

WIDTH = 16
BLOCKS = {
    "encoder": lambda: keras_hub.layers.TransformerEncoder(
        intermediate_dim=WIDTH, num_heads=2
    ),
    "decoder": lambda: keras_hub.layers.TransformerDecoder(
        intermediate_dim=WIDTH, num_heads=2, activation="gelu"
    ),
}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 8)).astype("float32")
    return x, np.tanh(x.sum(axis=(1, 2)))[:, None].astype("float32")


def _model(kind="decoder", chunks=4, seed=1, **kwargs):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 8))
    wrapper = DynamicFeedForward(
        BLOCKS[kind](), chunks=chunks, name="ffn", **kwargs
    )
    x = wrapper(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, wrapper


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_growth_keeps_the_function_and_finalizes_to_the_block(kind):
    model, wrapper = _model(kind)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    link_dynamic_layers(model)
    inner = wrapper.intermediate_dense
    assert inner.active_units == WIDTH // 4
    before = model.predict(x, verbose=0)
    inner.grow(freeze=False)
    assert inner.active_units == WIDTH // 2
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    trained = model.predict(x, verbose=0)
    assert np.abs(trained - before).max() > 1e-4
    plain = kg.finalize(model)
    block = plain.get_layer("ffn")
    assert type(block) is type(wrapper.layer)
    assert block.intermediate_dim == WIDTH // 2
    assert block._feedforward_intermediate_dense.kernel.shape == (8, 8)
    np.testing.assert_allclose(plain.predict(x, verbose=0), trained, atol=1e-5)


def test_the_train_step_uses_only_the_active_width():
    model, wrapper = _model()
    inner, reader = wrapper.intermediate_dense, wrapper.output_dense
    x, y = _data()
    link_dynamic_layers(model)
    inactive = [_np(k).copy() for k in inner.kernels[1:]]
    rows = _np(reader.kernel).copy()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    # The held chunks and the reader's rows for them are not trained; the
    # active ones are.
    for kernel, value in zip(inner.kernels[1:], inactive, strict=True):
        np.testing.assert_array_equal(_np(kernel), value)
    np.testing.assert_array_equal(_np(reader.kernel)[4:], rows[4:])
    assert np.abs(_np(reader.kernel)[:4] - rows[:4]).max() > 1e-4
    assert inner.traced_capacity == (WIDTH // 4, 0)


def test_capacity_growth_grows_every_block_inside_fit():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 8))
    wrappers = [
        DynamicFeedForward(BLOCKS["decoder"](), chunks=4) for _ in range(2)
    ]
    x = inputs
    for wrapper in wrappers:
        x = wrapper(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    data = _data()
    growth = CapacityGrowth(grow_at=[0.25, 0.5, 0.75], freeze=False)
    history = model.fit(*data, epochs=4, batch_size=8, callbacks=[growth])
    for wrapper in wrappers:
        assert wrapper.intermediate_dense.active_units == WIDTH
    assert len(growth.events) == 3
    names = {w.intermediate_dense.name for w in wrappers}
    assert len(names) == 2  # each block's layer has its own name
    assert all(n in growth.events[0]["layers"] for n in names)
    assert "capacity" in history.history
    np.testing.assert_allclose(
        kg.finalize(model).predict(data[0], verbose=0),
        model.predict(data[0], verbose=0),
        atol=1e-5,
    )


def test_save_mid_growth_and_resume_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    fit = dict(batch_size=8, shuffle=False, verbose=0)

    def growth():
        return CapacityGrowth(grow_at=[1, 3], freeze=False)

    full, _ = _model(seed=3)
    full.fit(x, y, epochs=4, callbacks=[growth()], **fit)
    first, wrapper = _model(seed=3)
    first.fit(x, y, epochs=2, callbacks=[growth()], **fit)
    assert wrapper.intermediate_dense.active_units == WIDTH // 2
    path = str(tmp_path / "ffn.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    inner = resumed.get_layer("ffn").intermediate_dense
    assert inner.active_units == WIDTH // 2
    np.testing.assert_allclose(
        resumed.predict(x, verbose=0), first.predict(x, verbose=0), atol=1e-6
    )
    resumed.fit(x, y, epochs=4, initial_epoch=2, callbacks=[growth()], **fit)
    assert inner.active_units == 3 * WIDTH // 4
    for a, b in zip(full.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_bad_arguments():
    block = BLOCKS["encoder"]()
    with pytest.raises(ValueError, match="chunks"):
        DynamicFeedForward(block, chunks=0)
    with pytest.raises(ValueError, match="initial_chunks"):
        DynamicFeedForward(block, chunks=2, initial_chunks=3)
    with pytest.raises(ValueError, match="growth_init"):
        DynamicFeedForward(block, chunks=2, growth_init="gradmax")
    with pytest.raises(ValueError, match="dense_names"):
        DynamicFeedForward(block, chunks=2, dense_names="dense")
    with pytest.raises(ValueError, match="gate_name"):
        DynamicFeedForward(block, chunks=2, gate_name=3)
    with pytest.raises(ValueError, match="chunks"):
        DynamicFeedForward(block, chunks=WIDTH + 1)(keras.Input((6, 8)))
    wrapper = DynamicFeedForward(keras.layers.Dense(4), chunks=2)
    with pytest.raises(ValueError, match="dense_names"):
        wrapper(keras.Input((6, 8)))


@pytest.mark.parametrize("louder", [0, 1])
def test_activation_std_reads_the_layers_inside_the_blocks(louder):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 8))
    wrappers = [
        DynamicFeedForward(BLOCKS["encoder"](), chunks=4) for _ in range(2)
    ]
    x = inputs
    for wrapper in wrappers:
        x = wrapper(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.SGD(0.0), "mse")  # weights stay put
    data = _data()
    link_dynamic_layers(model)
    loud = wrappers[louder].intermediate_dense
    loud.kernels[0].assign(loud.kernels[0].value * 100)
    inner = [w.intermediate_dense for w in wrappers]
    stats = kg.analysis.activation_stats(model, data[0], inner)
    assert stats[loud.name]["std"] > 10 * stats[inner[1 - louder].name]["std"]
    growth = CapacityGrowth(select="activation_std", data=data[0], grow_at=[1])
    model.fit(*data, epochs=2, batch_size=8, verbose=0, callbacks=[growth])
    assert growth.events[0]["layers"] == [loud.name]
    assert loud.active_units == WIDTH // 2
    assert inner[1 - louder].active_units == WIDTH // 4


def _tokens(n=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 32, size=(n, 6))
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    return x, (tokens.mean(axis=1, keepdims=True) / 32).astype("float32")


def _gated_model(backbone_class, **kwargs):
    """A keras-hub backbone whose block, gated like Llama's, is wrapped as a
    user would wrap it: a new block of the same config, put in its place
    with `replace_layers`."""
    keras.utils.set_random_seed(5)
    backbone = backbone_class(
        vocabulary_size=32,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=WIDTH,
    )
    block = backbone.get_layer("transformer_layer_0")
    wrapper = DynamicFeedForward(
        block.__class__.from_config(block.get_config()),
        chunks=4,
        name="ffn",
        **kwargs,
    )
    grown = kg.replace_layers(backbone, {"transformer_layer_0": wrapper})
    x = keras.layers.GlobalAveragePooling1D()(grown.output)
    model = keras.Model(grown.inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, wrapper


def test_the_gate_of_a_gated_feed_forward_grows_with_it(tmp_path):
    model, wrapper = _gated_model(keras_hub.models.MistralBackbone)
    inner, gate = wrapper.intermediate_dense, wrapper.gate_dense
    x, y = _tokens()
    fit = dict(batch_size=8, verbose=0)
    model.fit(x, y, epochs=1, **fit)
    # The gate's matrix product covers the active units only.
    assert gate.traced_capacity == inner.traced_capacity == (WIDTH // 4, 0)
    link_dynamic_layers(model)
    before = model.predict(x, verbose=0)
    inner.grow()  # freezes the first chunk, in the gate too
    assert gate.traced_capacity == (WIDTH // 2, WIDTH // 4)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    frozen = _np(gate.kernels[0]).copy()
    with pytest.raises(ValueError, match=inner.name):
        gate.set_capacity(WIDTH)
    assert gate.traced_capacity == (WIDTH // 2, WIDTH // 4)
    with pytest.raises(ValueError, match=f"layers.*{inner.name}.*instead"):
        model.fit(x, y, callbacks=[CapacityGrowth(layers=[gate], grow_at=[1])])
    assert gate.traced_capacity == (WIDTH // 2, WIDTH // 4)
    growth = CapacityGrowth(grow_at=[1])
    history = model.fit(x, y, epochs=2, callbacks=[growth], **fit)
    np.testing.assert_array_equal(_np(gate.kernels[0]), frozen)
    assert gate.traced_capacity == inner.traced_capacity
    assert inner.active_units == 3 * WIDTH // 4
    # The gate grows with its layer, not as a layer of its own.
    assert growth.events[0]["layers"] == [inner.name]
    assert not [k for k in history.history if gate.name in k]
    path = str(tmp_path / "gated.keras")
    model.save(path)
    loaded = keras.saving.load_model(path).get_layer("ffn")
    assert loaded.gate_dense.traced_capacity == gate.traced_capacity
    trained = model.predict(x, verbose=0)
    plain = kg.finalize(model)
    block = plain.get_layer("ffn")
    assert type(block) is type(wrapper.layer)
    assert block.intermediate_dim == 3 * WIDTH // 4
    assert block._feedforward_gate_dense.kernel.shape == (8, 3 * WIDTH // 4)
    np.testing.assert_allclose(plain.predict(x, verbose=0), trained, atol=1e-5)


def test_a_file_saved_before_gates_grew_keeps_its_gate_as_it_was():
    config = DynamicFeedForward(BLOCKS["encoder"](), chunks=2).get_config()
    assert config.pop("gate_name") == "_feedforward_gate_dense"
    assert DynamicFeedForward.from_config(config).gate_name is None


def test_a_gate_under_another_name_is_asked_for():
    names = ("feedforward_intermediate_dense", "feedforward_output_dense")
    with pytest.raises(ValueError, match="gate_name='feedforward_gate_dense'"):
        _gated_model(keras_hub.models.Phi3Backbone, dense_names=names)
    with pytest.raises(ValueError, match="gate_name"):
        _gated_model(
            keras_hub.models.Phi3Backbone, dense_names=names, gate_name="gate"
        )
    model, wrapper = _gated_model(
        keras_hub.models.Phi3Backbone,
        dense_names=names,
        gate_name="feedforward_gate_dense",
    )
    assert wrapper.gate_dense.traced_capacity == (WIDTH // 4, 0)
    link_dynamic_layers(model)
    x, _ = _tokens()
    before = model.predict(x, verbose=0)
    wrapper.intermediate_dense.grow(freeze=False)
    assert wrapper.gate_dense.active_units == WIDTH // 2
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
