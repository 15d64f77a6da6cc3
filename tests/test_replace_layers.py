"""replace_layers: growing blocks in place of the blocks of a keras-hub
backbone, and any layer of a keras.applications model, on the rewriting
engine; the original model is left as it was."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicAttentionHeads
from keras_gradnets.layers import DynamicFeedForward
from keras_gradnets.layers import link_dynamic_layers
from tests.helpers import assert_tree_close
from tests.helpers import tree_numpy

VOCABULARY = 40
LENGTH = 8
LAYERS = 2


def _gpt2():
    keras.utils.set_random_seed(0)
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY,
        max_sequence_length=LENGTH,
        num_layers=LAYERS,
        num_heads=4,
        hidden_dim=16,
        intermediate_dim=32,
    )


def _inputs(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCABULARY, (batch, LENGTH)).astype("int32")
    mask = np.ones((batch, LENGTH), "int32")
    tokens[:, -2:], mask[:, -2:] = 0, 0
    return {"token_ids": tokens, "padding_mask": mask}


def _growing(block):
    """A new block of `block`'s config whose heads and feed-forward width
    start at a quarter and grow by quarters."""
    fresh = block.__class__.from_config(block.get_config())
    heads = DynamicAttentionHeads(fresh, chunks=4, initial_chunks=1)
    return DynamicFeedForward(heads, chunks=4, initial_chunks=1, seed=3)


def _grown_gpt2():
    backbone = _gpt2()
    names = [f"transformer_layer_{i}" for i in range(LAYERS)]
    model = kg.replace_layers(
        backbone, {name: _growing(backbone.get_layer(name)) for name in names}
    )
    return backbone, model


def _wrappers(model):
    return [x for x in model.layers if isinstance(x, DynamicFeedForward)]


def test_growing_blocks_in_a_backbone_keep_the_function_and_finalize():
    backbone, model = _grown_gpt2()
    x = _inputs()
    before = tree_numpy(backbone.predict(x, verbose=0))
    weights = [w.copy() for w in backbone.get_weights()]

    wrappers = _wrappers(model)
    assert len(wrappers) == LAYERS
    # The other layers keep the backbone's weights; the blocks are new.
    assert_tree_close(
        model.get_layer("token_embedding").get_weights(),
        backbone.get_layer("token_embedding").get_weights(),
    )
    link_dynamic_layers(model)
    for wrapper in wrappers:
        assert wrapper.layer.active_heads == 1
        assert wrapper.intermediate_dense.active_units == 8
    out = tree_numpy(model.predict(x, verbose=0))
    for wrapper in wrappers:
        wrapper.layer.grow()
        wrapper.intermediate_dense.grow()
    # Growth keeps the function (new heads' output rows and the new
    # units' outgoing weights start at zero).
    assert_tree_close(tree_numpy(model.predict(x, verbose=0)), out, atol=1e-5)

    plain = kg.finalize(model)
    blocks = [plain.get_layer(w.name) for w in wrappers]
    assert all(type(b) is keras_hub.layers.TransformerDecoder for b in blocks)
    # The heads' key size is the hidden size over `num_heads` in keras-hub
    # blocks: finalize keeps the 4 heads, with the inactive ones' output
    # rows at zero, and cuts the feed-forward width.
    assert [b.num_heads for b in blocks] == [4, 4]
    assert [b.intermediate_dim for b in blocks] == [16, 16]
    assert_tree_close(plain(x), model(x), atol=1e-5)

    # The backbone is left as it was.
    assert backbone.get_layer("transformer_layer_0").__class__.__name__ == (
        "TransformerDecoder"
    )
    assert_tree_close(backbone.get_weights(), weights)
    assert_tree_close(tree_numpy(backbone.predict(x, verbose=0)), before)


def test_a_replaced_backbone_grows_inside_fit(tmp_path):
    _, backbone = _grown_gpt2()
    x = _inputs(batch=16, seed=1)
    outputs = keras.layers.Dense(1)(
        keras.layers.GlobalAveragePooling1D()(backbone.output)
    )
    model = keras.Model(backbone.inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    y = np.linspace(-1.0, 1.0, 16)[:, None].astype("float32")
    history = model.fit(
        x,
        y,
        epochs=4,
        batch_size=8,
        verbose=0,
        callbacks=[CapacityGrowth(grow_at=[0.25, 0.5, 0.75], freeze=False)],
    )
    assert np.isfinite(history.history["loss"]).all()
    for wrapper in _wrappers(model):
        assert wrapper.layer.active_heads == 4
        assert wrapper.intermediate_dense.active_units == 32
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_tree_close(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


def test_replace_layers_in_a_keras_applications_model():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4
    )
    relus = [x.name for x in model.layers if isinstance(x, keras.layers.ReLU)]
    new = kg.replace_layers(
        model,
        {
            name: kg.layers.GReLU(g=1.0, max_value=6.0, name=f"{name}_g")
            for name in relus
        },
    )
    assert not any(isinstance(x, keras.layers.ReLU) for x in new.layers)
    assert len(new.layers) == len(model.layers)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "replaced, match",
    [
        ({"nope": keras.layers.ReLU()}, r"no layers named \['nope'\]"),
        ({"transformer_layer_0": "relu"}, "Expected a dict from layer names"),
    ],
)
def test_replace_layers_bad_arguments(replaced, match):
    with pytest.raises(ValueError, match=match):
        kg.replace_layers(_gpt2(), replaced)


def test_replace_layers_in_a_sequential_model_shares_the_new_layer():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="first"),
            keras.layers.ReLU(name="relu_1"),
            keras.layers.Dense(4, name="second"),
            keras.layers.ReLU(name="relu_2"),
        ]
    )
    shared = kg.layers.GReLU(g=0.0, name="shared")
    new = kg.replace_layers(model, {"relu_1": shared, "relu_2": shared})
    assert [x.name for x in new.layers] == [
        "first",
        "shared",
        "second",
        "shared",
    ]
    assert_tree_close(
        new.get_layer("second").get_weights(),
        model.get_layer("second").get_weights(),
    )
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    # GReLU at g=0 is the identity: the model is linear.
    linear = x @ model.get_layer("first").kernel.numpy()
    linear = linear + model.get_layer("first").bias.numpy()
    second = model.get_layer("second")
    linear = linear @ second.kernel.numpy() + second.bias.numpy()
    assert_tree_close(new(x), linear, atol=1e-5)
