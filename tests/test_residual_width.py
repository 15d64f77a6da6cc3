"""Width search across residual joins, concatenations and depthwise
convolutions: the coupled cut of `keras_gradnets.core.width`."""

import keras
import numpy as np
import pytest

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import TemperatureScheduler
from tests.helpers import StopAfter

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 3, size=16)


def _conv_bn(h, filters, name, kernel_size=3, strides=1, relu=True):
    h = keras.layers.Conv2D(
        filters, kernel_size, strides, padding="same", name=f"{name}_conv"
    )(h)
    h = keras.layers.BatchNormalization(name=f"{name}_bn")(h)
    return keras.layers.ReLU(name=f"{name}_relu")(h) if relu else h


def _join(join, a, b, name):
    if join == "op":
        return a + b
    return keras.layers.Add(name=name)([a, b])


def _residual_net(join="layer", stage_widths=None):
    """Two stages of basic blocks: identity shortcuts in the first (one
    `ConcreteWidth` called after every join), a projection shortcut and a
    depthwise convolution in the second."""
    stage_widths = stage_widths or [layers.ConcreteWidth([4, 8, 12, 16])] * 3
    inputs = keras.Input((8, 8, 1))
    h = stage_widths[0](_conv_bn(inputs, 16, "stem"))
    for b in (1, 2):
        r = _conv_bn(h, 8, f"s1b{b}_1")
        r = layers.ConcreteWidth([2, 4, 8], name=f"s1b{b}_width")(r)
        r = _conv_bn(r, 16, f"s1b{b}_2", relu=False)
        h = keras.layers.ReLU(name=f"s1b{b}_out")(_join(join, h, r, f"s1b{b}"))
        h = stage_widths[b](h)
    shortcut = _conv_bn(h, 24, "s2_project", 1, 2, relu=False)
    r = _conv_bn(h, 24, "s2_1", 1)
    r = keras.layers.DepthwiseConv2D(3, 2, padding="same", name="s2_dw")(r)
    r = keras.layers.BatchNormalization(name="s2_dw_bn")(r)
    r = keras.layers.ReLU()(r)
    r = layers.ConcreteWidth([6, 12, 24], name="s2_inner_width")(r)
    r = _conv_bn(r, 24, "s2_2", 1, relu=False)
    h = keras.layers.ReLU()(_join(join, shortcut, r, "s2"))
    h = layers.ConcreteWidth([12, 24], name="s2_width")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _choose(layer, index):
    logits = np.zeros(layer.logits.shape, "float32")
    logits[index] = 1.0
    layer.logits.assign(logits)


def _randomize_batch_norms(model):
    """Statistics far from (0, 1), so a batch norm on a cut channel that
    should be 0 is not 0 by chance."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape
            layer.set_weights(
                [
                    RNG.uniform(0.5, 1.5, size),
                    RNG.normal(size=size),
                    RNG.normal(size=size),
                    RNG.uniform(0.5, 1.5, size),
                ]
            )


def _check_finalized(model, x):
    plain = keras_gradnets.finalize(model)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    assert not [
        layer
        for layer in plain._flatten_layers()
        if isinstance(layer, layers.ConcreteWidth)
    ]
    assert plain.count_params() < model.count_params()
    return plain


def _layer(model, name):
    return [x for x in model.layers if x.name.startswith(name)][0]


@pytest.mark.parametrize("join", ["layer", "op"])
def test_a_searched_resnet_finalizes_to_a_smaller_equal_model(join):
    model = _residual_net(join)
    model.fit(X, Y, epochs=1, verbose=0, callbacks=[TemperatureScheduler()])
    _randomize_batch_norms(model)
    stage = model.get_layer("s1b1_out")._outbound_nodes[0].operation
    _choose(stage, 1)
    _choose(model.get_layer("s1b1_width"), 0)
    _choose(model.get_layer("s1b2_width"), 2)
    _choose(model.get_layer("s2_inner_width"), 1)
    _choose(model.get_layer("s2_width"), 0)
    plain = _check_finalized(model, X)
    # The stage's 8 channels: the stem, both blocks' last convolutions and
    # batch norms, and every kernel that reads the stage.
    assert plain.get_layer("stem_conv").filters == 8
    assert plain.get_layer("stem_bn").gamma.shape == (8,)
    assert plain.get_layer("s1b2_2_conv").filters == 8
    assert plain.get_layer("s1b2_1_conv").kernel.shape == (3, 3, 8, 8)
    assert plain.get_layer("s2_project_conv").kernel.shape == (1, 1, 8, 12)
    assert plain.get_layer("s2_1_conv").kernel.shape == (1, 1, 8, 12)
    assert plain.get_layer("s1b1_1_conv").filters == 2
    # The depthwise convolution between a producer and its width.
    assert plain.get_layer("s2_dw").kernel.shape == (3, 3, 12, 1)
    assert plain.get_layer("s2_dw").bias.shape == (12,)
    assert plain.get_layer("s2_dw_bn").gamma.shape == (12,)
    assert plain.get_layer("head").kernel.shape == (12, 3)


def test_a_saved_residual_search_loads_and_finalizes_the_same(tmp_path):
    model = _residual_net()
    model.fit(X, Y, epochs=1, verbose=0, callbacks=[TemperatureScheduler()])
    _choose(model.get_layer("s1b1_width"), 1)
    model.save(tmp_path / "search.keras")
    loaded = keras.saving.load_model(tmp_path / "search.keras")
    shared = [
        x
        for x in loaded.layers
        if isinstance(x, layers.ConcreteWidth) and len(x._inbound_nodes) == 3
    ]
    assert len(shared) == 1
    np.testing.assert_allclose(
        keras_gradnets.finalize(loaded).predict(X, verbose=0),
        keras_gradnets.finalize(model).predict(X, verbose=0),
        atol=1e-5,
    )


def test_a_residual_search_resumed_from_a_file_matches_an_uninterrupted_run(
    tmp_path,
):
    kwargs = dict(batch_size=4, shuffle=False, verbose=0)
    search = dict(warmup_steps=6, logits_scale=3.0)

    def fresh():
        keras.utils.set_random_seed(3)
        return _residual_net()

    full = fresh()
    full.fit(
        X, Y, epochs=4, callbacks=[TemperatureScheduler(**search)], **kwargs
    )
    model = fresh()
    model.fit(
        X,
        Y,
        epochs=4,
        callbacks=[TemperatureScheduler(**search), StopAfter(1)],
        **kwargs,
    )
    model.save(tmp_path / "search.keras")
    loaded = keras.saving.load_model(tmp_path / "search.keras")
    loaded.fit(
        X,
        Y,
        epochs=4,
        initial_epoch=2,
        callbacks=[TemperatureScheduler(**search)],
        **kwargs,
    )
    for a, b in zip(loaded.weights, full.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            atol=1e-5,
            err_msg=a.path,
        )
    np.testing.assert_allclose(
        keras_gradnets.finalize(loaded).predict(X, verbose=0),
        keras_gradnets.finalize(full).predict(X, verbose=0),
        atol=1e-5,
    )


def test_concatenated_widths_keep_their_rows_at_their_offsets():
    inputs = keras.Input((8, 8, 2))
    first = layers.ConcreteWidth([2, 4, 6], name="first_width")(
        _conv_bn(inputs, 6, "first")
    )
    kept = _conv_bn(inputs, 3, "kept")
    second = layers.ConcreteWidth([1, 5], name="second_width")(
        _conv_bn(inputs, 5, "second")
    )
    h = keras.layers.Concatenate(name="concat")([first, kept, second])
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(4, 3, name="reader")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = RNG.normal(size=(4, 8, 8, 2)).astype("float32")
    _randomize_batch_norms(model)
    _choose(model.get_layer("first_width"), 1)
    _choose(model.get_layer("second_width"), 0)
    plain = _check_finalized(model, x)
    assert plain.get_layer("first_conv").filters == 4
    assert plain.get_layer("second_conv").filters == 1
    assert plain.get_layer("reader").kernel.shape == (3, 3, 4 + 3 + 1, 4)
    np.testing.assert_array_equal(
        plain.get_layer("reader").kernel.numpy()[:, :, 4:7],
        keras.ops.convert_to_numpy(model.get_layer("reader").kernel)[:, :, 6:9],
    )


def _stage_with(widths):
    return lambda: _residual_net(stage_widths=widths)


@pytest.mark.parametrize(
    "make, match",
    [
        (
            _stage_with(
                [layers.ConcreteWidth([8, 16], name=f"w{i}") for i in range(3)]
            ),
            "'w.'.*also cut by 'w.'",
        ),
        (
            _stage_with(
                [keras.layers.Identity(), keras.layers.Identity()]
                + [layers.ConcreteWidth([8, 16], name="last")]
            ),
            "'last'.*not all 0 where they are read by 's1b2_1_conv'.*same "
            "ConcreteWidth layer after every join",
        ),
    ],
)
def test_fit_refuses_a_stage_finalize_could_not_cut(make, match):
    model = make()
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(ValueError, match=f"refuses to start.*{match}"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[TemperatureScheduler()])
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match=match):
        keras_gradnets.finalize(model)


def test_a_width_concatenated_twice_is_refused():
    inputs = keras.Input((4, 4, 2))
    h = layers.ConcreteWidth(name="width")(_conv_bn(inputs, 4, "a"))
    h = keras.layers.Concatenate()([h, inputs])
    h = keras.layers.Concatenate(name="again")([h, inputs])
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(h))
    with pytest.raises(ValueError, match="'width'.*concatenated again by"):
        keras_gradnets.finalize(model)


def test_a_keras_applications_resnet_stage_is_searched_and_cut():
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=4
    )
    stage = layers.ConcreteWidth([64, 128, 192, 256], name="conv2_width")
    inner = layers.ConcreteWidth([16, 32, 64], name="conv2_block2_width")
    searched = keras_gradnets.insert_after(
        model,
        {
            **{f"conv2_block{i}_out": stage for i in (1, 2, 3)},
            "conv2_block2_2_relu": inner,
        },
    )
    assert searched.count_params() == (
        model.count_params() + stage.count_params() + inner.count_params()
    )
    _randomize_batch_norms(searched)
    _choose(stage, 1)
    _choose(inner, 0)
    x = RNG.normal(size=(2, 32, 32, 3)).astype("float32")
    plain = _check_finalized(searched, x)
    for name in ("conv2_block1_0_conv", "conv2_block1_3_conv"):
        assert plain.get_layer(name).filters == 128
    assert plain.get_layer("conv2_block3_3_bn").gamma.shape == (128,)
    for name in ("conv2_block2_1_conv", "conv3_block1_0_conv"):
        assert plain.get_layer(name).kernel.shape[-2] == 128
    assert plain.get_layer("conv2_block2_2_conv").filters == 16
    assert plain.get_layer("conv2_block2_3_conv").kernel.shape[-2] == 16
    assert not [
        x for x in plain.layers if x.__module__.startswith("keras_gradnets")
    ]


def test_a_keras_applications_inverted_residual_block_is_searched_and_cut():
    # MobileNetV2's linear bottlenecks: no activation after the join, so the
    # stage's width goes right after the projection's batch norm and the
    # join; the expansion's width after the depthwise convolution's ReLU6.
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=4, alpha=0.35
    )
    stage = layers.ConcreteWidth([4, 8], name="block_2_width")
    inner = layers.ConcreteWidth([16, 48], name="block_2_inner_width")
    searched = keras_gradnets.insert_after(
        model,
        {
            "block_1_project_BN": stage,
            "block_2_add": stage,
            "block_2_depthwise_relu": inner,
        },
    )
    _randomize_batch_norms(searched)
    _choose(stage, 0)
    _choose(inner, 0)
    x = RNG.normal(size=(2, 32, 32, 3)).astype("float32")
    plain = _check_finalized(searched, x)
    assert plain.get_layer("block_1_project").kernel.shape == (1, 1, 48, 4)
    assert plain.get_layer("block_2_project").kernel.shape == (1, 1, 16, 4)
    assert plain.get_layer("block_2_expand").kernel.shape == (1, 1, 4, 16)
    assert plain.get_layer("block_2_depthwise").kernel.shape == (3, 3, 16, 1)
    assert plain.get_layer("block_3_expand").kernel.shape[-2] == 4


def test_insert_after_shares_a_layer_and_keeps_the_weights():
    model = _residual_net()
    extra = keras.layers.Dropout(0.5, name="extra")
    new = keras_gradnets.insert_after(
        model, {"s1b1_out": extra, "s1b2_out": extra}
    )
    assert len(new.get_layer("extra")._inbound_nodes) == 2
    np.testing.assert_allclose(
        new.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6
    )
    assert "extra" not in [x.name for x in model.layers]


@pytest.mark.parametrize(
    "inserted, match",
    [
        ({"nope": keras.layers.ReLU()}, r"no layers named \['nope'\]"),
        ({"s1b1_out": "relu"}, "Expected a dict from layer names"),
        ([keras.layers.ReLU()], "Expected a dict from layer names"),
    ],
)
def test_insert_after_bad_arguments(inserted, match):
    with pytest.raises(ValueError, match=match):
        keras_gradnets.insert_after(_residual_net(), inserted)
