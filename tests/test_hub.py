"""gradualize inside keras-hub transformers, built from constructor
arguments (no download): the blocks' activations and dropouts anneal, the
backbone keeps its class, task models take it, `.keras` round trips, and
finalize gives back the original classes and configs."""

import json
import warnings

import keras
import keras_hub
import numpy as np
import pytest

import keras_gradnets
from keras_gradnets.callbacks import GradNetScheduler
from keras_gradnets.core.walk import walk_layers
from keras_gradnets.layers import GradualLayer
from tests.helpers import assert_tree_close
from tests.helpers import tree_numpy

RNG = np.random.default_rng(0)
VOCABULARY = 40
LENGTH = 8
TINY = dict(num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)
TINY_VIT = dict(num_layers=2, num_heads=2, hidden_dim=8, dropout_rate=0.1)


def _gpt2():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY, max_sequence_length=LENGTH, **TINY
    )


def _bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY, max_sequence_length=LENGTH, **TINY
    )


BACKBONES = {"gpt2": _gpt2, "bert": _bert}


def _inputs(backbone, batch=4):
    tokens = RNG.integers(1, VOCABULARY, (batch, LENGTH)).astype("int32")
    mask = np.ones((batch, LENGTH), "int32")
    tokens[:, -2:], mask[:, -2:] = 0, 0  # padding, masked out
    x = {"token_ids": tokens, "padding_mask": mask}
    if "segment_ids" in backbone.input:
        x["segment_ids"] = np.zeros((batch, LENGTH), "int32")
    return x


def _twins(model):
    return [x for x in walk_layers(model) if isinstance(x, GradualLayer)]


def _set_g(model, value):
    for twin in _twins(model):
        twin.g.assign(value)


def _task(name, backbone):
    if name == "gpt2":
        model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        model = keras_hub.models.BertTextClassifier(
            backbone, num_classes=3, preprocessor=None
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss)
    return model


def _targets(name, x):
    if name == "gpt2":
        return x["token_ids"]
    return RNG.integers(0, 3, (len(x["token_ids"]),))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_gradualize_reaches_inside_every_block(name):
    original = BACKBONES[name]()
    x = _inputs(original)
    model = keras_gradnets.gradualize(original, verbose=False)

    assert isinstance(model, type(original))
    blocks = [x for x in model.layers if "transformer_layer" in x.name]
    assert len(blocks) == TINY["num_layers"]
    for block in blocks:
        inside = {twin.name for twin in _twins(block)}
        # The feed-forward activation, and the attention, self-attention
        # and feed-forward dropouts.
        assert "feedforward_intermediate_dense_activation" in inside
        assert {"self_attention_dropout", "feedforward_dropout"} <= inside
    # g=1 is the original; g=0 a linear, dropout-free feed-forward path.
    _set_g(model, 1.0)
    assert_tree_close(model(x), original(x))
    _set_g(model, 0.0)
    early = keras.tree.flatten(tree_numpy(model(x)))
    late = keras.tree.flatten(tree_numpy(original(x)))
    assert all(np.isfinite(v).all() for v in early)
    assert not all(np.allclose(a, b) for a, b in zip(early, late, strict=True))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_task_model_trains_saves_and_finalizes(name, tmp_path):
    original = BACKBONES[name]()
    x = _inputs(original)
    y = _targets(name, x)
    backbone = keras_gradnets.gradualize(original, verbose=False)
    task = _task(name, backbone)

    # The compiled predict step reads g as it is now, not as it was when
    # it was traced: at each end point it matches the eager call.
    outputs = []
    for g in (0.0, 1.0):
        _set_g(task, g)
        outputs.append(task.predict(x, verbose=0))
        assert_tree_close(outputs[-1], task(x, training=False))
    assert not np.allclose(*outputs, rtol=0, atol=1e-6)

    _set_g(task, 0.0)
    history = task.fit(
        x, y, epochs=3, verbose=0, callbacks=[GradNetScheduler(tau=2)]
    )
    assert history.history["g"] == [0.0, 0.5, 1.0]
    assert {float(tree_numpy(t.g)) for t in _twins(task)} == {1.0}

    path = tmp_path / "task.keras"
    task.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.backbone, type(original))
    assert len(_twins(loaded)) == len(_twins(task))
    assert_tree_close(loaded.predict(x, verbose=0), task.predict(x, verbose=0))

    plain = keras_gradnets.finalize(loaded.backbone)
    assert type(plain) is type(original)
    assert plain.get_config() == original.get_config()
    assert not _twins(plain)
    assert_tree_close(plain(x), loaded.backbone(x))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_insert_after_a_transformer_block(name, tmp_path):
    backbone = BACKBONES[name]()
    x = _inputs(backbone)
    extra = keras.layers.Dropout(0.5, name="extra")
    model = keras_gradnets.insert_after(
        backbone, {"transformer_layer_0": extra}
    )
    (node,) = extra._inbound_nodes
    assert node.parent_nodes[0].operation.name == "transformer_layer_0"
    expected = backbone.predict(x, verbose=0)
    assert_tree_close(model.predict(x, verbose=0), expected, atol=1e-6)
    # Its class rebuilds the graph from constructor arguments, which cannot
    # hold the new layer: a functional model with the same inputs comes back.
    assert not isinstance(model, keras_hub.models.Backbone)
    model.save(tmp_path / "inserted.keras")
    loaded = keras.saving.load_model(tmp_path / "inserted.keras")
    assert_tree_close(loaded.predict(x, verbose=0), expected, atol=1e-6)


def test_finalize_refuses_a_backbone_mid_annealing():
    model = keras_gradnets.gradualize(_gpt2(), verbose=False)
    _set_g(model, 0.5)
    with pytest.raises(ValueError, match="start_from_epoch"):
        keras_gradnets.finalize(model)


def test_gradualize_summary_names_blocks_and_kept_layers(capsys):
    keras_gradnets.gradualize(_gpt2())
    out = capsys.readouterr().out
    assert "1 x GPT2Backbone -> GradualGPT2Backbone" in out
    assert "2 x Dense activation -> GradualActivation" in out
    assert "kept 1 layers of the graph GPT2Backbone builds" in out
    assert "output activations" not in out
    keras_gradnets.gradualize(_resnet())
    out = capsys.readouterr().out
    assert "4 x Activation -> GReLU" in out
    assert "kept 1 output activations: stack1_block0_out" in out
    assert "layers of the graph" not in out


def test_gradualize_of_a_task_says_to_gradualize_its_backbone():
    task = keras_hub.models.GPT2CausalLM(_gpt2(), preprocessor=None)
    with pytest.raises(ValueError, match="Gradualize its backbone"):
        keras_gradnets.gradualize(task, verbose=False)


def _hub_layers_model():
    tokens = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(VOCABULARY, 8, mask_zero=True)(tokens)
    h = keras_hub.layers.TransformerEncoder(
        16, 2, dropout=0.1, activation="gelu"
    )(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(8, activation="relu"))(
        h
    )
    h = keras.layers.Bidirectional(keras.layers.LSTM(4))(h)  # reads the mask
    return keras.Model(tokens, keras.layers.Dense(3)(h))


def test_layers_with_sublayers_in_a_functional_model(tmp_path):
    original = _hub_layers_model()
    tokens = RNG.integers(1, VOCABULARY, (4, LENGTH)).astype("int32")
    tokens[:, -3:] = 0
    model = keras_gradnets.gradualize(original, verbose=False)

    wrapped = [
        type(x.layer).__name__ for x in model.layers if hasattr(x, "changes")
    ]
    assert wrapped == ["TransformerEncoder", "TimeDistributed"]
    _set_g(model, 1.0)
    assert_tree_close(model(tokens), original(tokens))
    _set_g(model, 0.0)
    assert np.isfinite(tree_numpy(model(tokens))).all()

    _set_g(model, 1.0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_tree_close(loaded(tokens), original(tokens))

    plain = keras_gradnets.finalize(loaded)
    assert [type(x) for x in plain.layers] == [type(x) for x in original.layers]
    for new, old in zip(plain.layers[1:], original.layers[1:], strict=True):
        assert _config(new) == _config(old)
    assert_tree_close(plain(tokens), original(tokens))


def _config(layer):
    """`layer`'s config as a `.keras` file holds it (tuples as lists)."""
    return json.loads(json.dumps(layer.get_config()))


def test_the_registered_mixin_rebuilds_any_gradual_backbone():
    # In a fresh process `.keras` files name the `GradualBackbone` mixin,
    # whose `from_config` makes the subclass of the saved backbone class.
    model = keras_gradnets.gradualize(_bert(), verbose=False)
    rebuilt = keras_gradnets.layers.GradualBackbone.from_config(
        model.get_config()
    )
    assert type(rebuilt) is type(model)
    assert isinstance(rebuilt, keras_hub.models.BertBackbone)
    assert len(_twins(rebuilt)) == len(_twins(model))


def test_gradualize_reaches_blocks_kept_in_a_list(tmp_path):
    # ViT's encoder keeps its blocks in a list, and each block its
    # feed-forward path in a layer of its own.
    original = keras_hub.models.ViTBackbone(
        image_shape=(8, 8, 3), patch_size=4, mlp_dim=16, **TINY_VIT
    )
    x = RNG.normal(size=(2, 8, 8, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "gradualize cannot reach")
        model = keras_gradnets.gradualize(original, verbose=False)
    (encoder,) = [x for x in model.layers if type(x).__name__ == "ViTEncoder"]
    for block in encoder.encoder_layers:
        inside = {type(twin).__name__ for twin in _twins(block)}
        assert inside == {"GradualActivation", "GradualDropout"}
    _set_g(model, 1.0)
    assert_tree_close(model(x), original(x))
    _set_g(model, 0.0)
    assert not np.allclose(tree_numpy(model(x)), tree_numpy(original(x)))

    model.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    assert_tree_close(loaded(x), model(x))
    _set_g(loaded, 1.0)
    plain = keras_gradnets.finalize(loaded)
    assert type(plain) is keras_hub.models.ViTBackbone
    assert _config(plain) == _config(original)
    assert_tree_close(plain(x), original(x))


def _resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )


def _efficientnet():
    return keras_hub.models.EfficientNetBackbone(
        width_coefficient=0.25,
        depth_coefficient=0.25,
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[32, 16],
        stackwise_output_filters=[16, 24],
        stackwise_expansion_ratios=[1, 6],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"],
        image_shape=(16, 16, 3),
    )


# A convnet backbone's activations are layers of the graph its class
# builds: `Activation` layers (ResNet) and activations fused into `Conv2D`
# layers (EfficientNet's swish; its squeeze-and-excitation sigmoids gate).
CONVNETS = {"resnet": (_resnet, 4), "efficientnet": (_efficientnet, 6)}


@pytest.mark.parametrize("name", sorted(CONVNETS))
def test_a_convnet_backbone_anneals_the_activations_of_its_graph(
    name, tmp_path
):
    build, converted = CONVNETS[name]
    original = build()
    x = RNG.normal(size=(4, 16, 16, 3)).astype("float32")
    model = keras_gradnets.gradualize(original, verbose=False)
    assert len(_twins(model)) == converted
    # The backbone's output is what the task reads: its activation stays.
    (output,) = [x for x in model.layers if x.output is model.output]
    assert not isinstance(output.activation, GradualLayer)
    _set_g(model, 1.0)
    assert_tree_close(model(x), original(x))
    _set_g(model, 0.0)
    assert not np.allclose(tree_numpy(model(x)), tree_numpy(original(x)))

    task = keras_hub.models.ImageClassifier(model, num_classes=3)
    task.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = task.fit(
        x,
        RNG.integers(0, 3, (4,)),
        epochs=3,
        verbose=0,
        callbacks=[GradNetScheduler(tau=2)],
    )
    assert history.history["g"] == [0.0, 0.5, 1.0]
    task.save(tmp_path / "task.keras")
    loaded = keras.saving.load_model(tmp_path / "task.keras")
    assert_tree_close(loaded.predict(x, verbose=0), task.predict(x, verbose=0))

    plain = keras_gradnets.finalize(loaded.backbone)
    assert type(plain) is type(original)
    assert _config(plain) == _config(original)
    assert not _twins(plain)
    assert_tree_close(plain(x), loaded.backbone(x))
