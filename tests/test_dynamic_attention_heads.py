"""DynamicAttentionHeads: the attention heads of keras-hub transformer
blocks grow inside `fit`, keeping the function, computing only the active
heads, and finalize to the block's own class."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicAttentionHeads
from keras_gradnets.layers import link_dynamic_layers

HEADS = 4
BLOCKS = {
    "encoder": lambda: keras_hub.layers.TransformerEncoder(
        intermediate_dim=16, num_heads=HEADS
    ),
    "decoder": lambda: keras_hub.layers.TransformerDecoder(
        intermediate_dim=16, num_heads=HEADS, activation="gelu"
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
    wrapper = DynamicAttentionHeads(
        BLOCKS[kind](), chunks=chunks, name="heads", **kwargs
    )
    x = keras.layers.GlobalAveragePooling1D()(wrapper(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, wrapper


def _attention(wrapper):
    return wrapper.layer._self_attention_layer


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_growth_keeps_the_function_and_finalizes_to_the_block(kind):
    model, wrapper = _model(kind)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    link_dynamic_layers(model)
    assert wrapper.active_heads == 1
    before = model.predict(x, verbose=0)
    assert wrapper.grow() == 1
    assert wrapper.active_heads == 2 and wrapper.capacity == 0.5
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    trained = model.predict(x, verbose=0)
    assert np.abs(trained - before).max() > 1e-4
    plain = kg.finalize(model)
    block = plain.get_layer("heads")
    assert type(block) is type(wrapper.layer)
    assert block.num_heads == HEADS
    np.testing.assert_allclose(plain.predict(x, verbose=0), trained, atol=1e-5)


def test_the_train_step_computes_and_trains_only_the_active_heads():
    model, wrapper = _model(chunks=2)
    attention = _attention(wrapper)
    x, y = _data()
    link_dynamic_layers(model)
    projections = {
        name: _np(getattr(attention, name).kernel).copy()
        for name in ("_query_dense", "_value_dense", "_output_dense")
    }
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for name, before in projections.items():
        after = _np(getattr(attention, name).kernel)
        # The query and value kernels index heads on axis 1, the output
        # kernel on axis 0.
        axis = 0 if name == "_output_dense" else 1
        active, held = np.split(after, [2], axis=axis)
        trained, kept = np.split(before, [2], axis=axis)
        np.testing.assert_array_equal(held, kept)
        assert np.abs(active - trained).max() > 1e-4
    query = attention._query_dense(keras.ops.convert_to_tensor(x))
    assert tuple(query.shape) == (32, 6, 2, 8 // HEADS)


def test_capacity_growth_grows_the_heads_inside_fit():
    model, wrapper = _model(seed=2)
    data = _data()
    growth = CapacityGrowth(grow_at=[0.25, 0.5, 0.75])
    history = model.fit(*data, epochs=4, batch_size=8, callbacks=[growth])
    assert wrapper.active_heads == HEADS
    assert [e["layers"] for e in growth.events] == [["heads"]] * 3
    np.testing.assert_allclose(
        history.history["capacity"], [0.5, 0.75, 1.0, 1.0]
    )
    np.testing.assert_allclose(
        kg.finalize(model).predict(data[0], verbose=0),
        model.predict(data[0], verbose=0),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="freeze=True"):
        model.fit(*data, epochs=1, callbacks=[CapacityGrowth(freeze=True)])


def test_save_mid_growth_and_resume_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    fit = dict(batch_size=8, shuffle=False, verbose=0)

    def growth():
        return CapacityGrowth(grow_at=[1, 3])

    full, _ = _model(seed=3)
    full.fit(x, y, epochs=4, callbacks=[growth()], **fit)
    first, wrapper = _model(seed=3)
    first.fit(x, y, epochs=2, callbacks=[growth()], **fit)
    assert wrapper.active_heads == 2
    path = str(tmp_path / "heads.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    loaded = resumed.get_layer("heads")
    assert loaded.active_heads == 2
    np.testing.assert_allclose(
        resumed.predict(x, verbose=0), first.predict(x, verbose=0), atol=1e-6
    )
    resumed.fit(x, y, epochs=4, initial_epoch=2, callbacks=[growth()], **fit)
    assert loaded.active_heads == 3
    for a, b in zip(full.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_set_weights_at_another_capacity_and_refusals_leave_it_as_it_was():
    model, wrapper = _model()
    x, _ = _data()
    link_dynamic_layers(model)
    wrapper.grow(2)
    grown = model.get_weights()
    wrapper_grown = model.predict(x, verbose=0)
    fresh, other = _model()
    fresh.predict(x, verbose=0)
    fresh.set_weights(grown)
    assert other.active_heads == 3
    np.testing.assert_allclose(
        fresh.predict(x, verbose=0), wrapper_grown, atol=1e-6
    )
    bad = list(grown)
    index = [id(v) for v in fresh.weights].index(id(other._active_variable))
    bad[index] = np.int32(0)
    before = [_np(v).copy() for v in fresh.weights]
    with pytest.raises(ValueError, match="active_heads"):
        fresh.set_weights(bad)
    for variable, value in zip(fresh.weights, before, strict=True):
        np.testing.assert_array_equal(_np(variable), value)
    assert other.active_heads == 3


def test_bad_arguments():
    block = BLOCKS["encoder"]()
    with pytest.raises(ValueError, match="chunks"):
        DynamicAttentionHeads(block, chunks=1)
    with pytest.raises(ValueError, match="initial_chunks"):
        DynamicAttentionHeads(block, chunks=2, initial_chunks=2)
    with pytest.raises(ValueError, match="attention_names"):
        DynamicAttentionHeads(block, chunks=2, attention_names="attention")
    with pytest.raises(ValueError, match="chunks"):
        DynamicAttentionHeads(block, chunks=HEADS + 1)(keras.Input((6, 8)))
    wrapper = DynamicAttentionHeads(
        BLOCKS["encoder"](), chunks=2, attention_names=["_feedforward_dropout"]
    )
    with pytest.raises(ValueError, match="attention_names"):
        wrapper(keras.Input((6, 8)))
    model, wrapper = _model()
    with pytest.raises(ValueError, match="freeze"):
        wrapper.grow(freeze=True)


@pytest.mark.parametrize("heads_outside", [False, True])
def test_heads_and_feed_forward_grow_together_in_one_block(
    heads_outside, tmp_path
):
    keras.utils.set_random_seed(5)
    block = BLOCKS["decoder"]()
    if heads_outside:
        inner = kg.layers.DynamicFeedForward(block, chunks=4)
        wrapper = DynamicAttentionHeads(inner, chunks=4, name="both")
    else:
        inner = DynamicAttentionHeads(block, chunks=4)
        wrapper = kg.layers.DynamicFeedForward(inner, chunks=4, name="both")
    heads, ffn = (wrapper, inner) if heads_outside else (inner, wrapper)
    inputs = keras.Input((6, 8))
    x = keras.layers.GlobalAveragePooling1D()(wrapper(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    before = model.predict(x, verbose=0)
    growth = CapacityGrowth(grow_at=[1])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[growth])
    assert heads.active_heads == 2
    assert ffn.intermediate_dense.active_units == 8
    grown = model.predict(x, verbose=0)
    assert np.abs(grown - before).max() > 1e-4  # trained before growing
    path = str(tmp_path / "both.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), grown, atol=1e-6)
    plain = kg.finalize(model)
    block = plain.get_layer("both")
    assert type(block) is keras_hub.layers.TransformerDecoder
    assert block.intermediate_dim == 8 and block.num_heads == HEADS
    np.testing.assert_allclose(plain.predict(x, verbose=0), grown, atol=1e-5)
