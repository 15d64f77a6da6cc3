"""gradualize and finalize on models nobody here wrote.

The one rewriting engine (`keras_gradnets.core.rewrite`) passes every node
it does not rewrite through unchanged: op nodes (arithmetic, slicing,
`keras.ops` calls), masks, several and dict inputs and outputs, wrappers.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradnets
from keras_gradnets import layers
from tests.helpers import assert_tree_close
from tests.helpers import tree_numpy

RNG = np.random.default_rng(0)


def _set_state(model, name, value):
    for layer in model._flatten_layers():
        if isinstance(layer, layers.StatefulLayer) and name in getattr(
            layer, "state_ranges", {}
        ):
            getattr(layer, name).assign(value)


def _library_layers(model):
    """The layers of this package inside `model`."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, (layers.StatefulLayer,))
    ]


def _ops_graph():
    """Every kind of node a functional graph can hold besides layers."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    features = keras.Input((5,), name="features")
    h = keras.layers.Embedding(20, 8, mask_zero=True, name="embed")(tokens)
    h = keras.layers.LSTM(8, name="lstm")(h)  # reads the mask
    f = keras.layers.Dense(8, activation="relu", name="dense")(features)
    f = f * 0.5 + 3.0  # arithmetic on KerasTensors
    f = ops.tanh(f)  # a keras.ops call
    # A hard sigmoid gate, as MobileNetV3 writes it: kept.
    hard = keras.layers.ReLU(6.0, name="hard_sigmoid")(f + 3.0) * (1.0 / 6.0)
    f = keras.layers.Multiply(name="hard_swish")([f, hard])
    z = keras.layers.Concatenate(name="concat")(
        [h, f[:, :4], ops.mean(f, axis=-1, keepdims=True)]  # slicing, ops
    )
    z = keras.layers.Dropout(0.3, name="drop")(z)
    gate = keras.layers.Dense(13, activation="sigmoid", name="gate")(z)
    z = keras.layers.Multiply(name="gated")([z, gate])
    out = keras.layers.Dense(3, activation="softmax", name="out")(z)
    return keras.Model(
        {"tokens": tokens, "features": features},
        {"out": out, "hidden": f},
        name="ops_graph",
    )


def _ops_inputs():
    tokens = RNG.integers(1, 20, size=(4, 6))
    tokens[:, 4:] = 0  # padding the mask hides
    tokens[0, 2:] = 0
    return {
        "tokens": tokens.astype("int32"),
        "features": RNG.normal(size=(4, 5)).astype("float32"),
    }


def test_every_kind_of_op_node_passes_through():
    model, x = _ops_graph(), _ops_inputs()
    expected = model(x)
    gradual = keras_gradnets.gradualize(model)
    twins = {
        layer.name: type(layer).__name__ for layer in _library_layers(gradual)
    }
    # The gates (sigmoid, hard sigmoid) and the softmax output are kept.
    assert twins == {"dense_activation": "GReLU", "drop": "GradualDropout"}
    _set_state(gradual, "g", 0.0)
    assert all(np.isfinite(v).all() for v in tree_numpy(gradual(x)).values())
    _set_state(gradual, "g", 1.0)
    assert_tree_close(gradual(x), expected)
    plain = keras_gradnets.finalize(gradual)
    assert_tree_close(plain(x), expected)
    assert not _library_layers(plain)


def _mollified_rnn(bidirectional):
    inputs = keras.Input((7,), dtype="int32")
    h = keras.layers.Embedding(11, 4, mask_zero=True)(inputs)
    rnn = keras.layers.RNN(layers.MollifiedLSTMCell(5), name="rnn")
    if bidirectional:
        rnn = keras.layers.Bidirectional(rnn, name="bidirectional")
    return keras.Model(inputs, keras.layers.Dense(2)(rnn(h)))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_masked_mollified_rnn_finalizes_to_plain_keras(bidirectional):
    model = _mollified_rnn(bidirectional)
    tokens = RNG.integers(1, 11, size=(3, 7)).astype("int32")
    tokens[:, 5:] = 0
    model.compile("adam", "mse")
    model.fit(tokens, RNG.normal(size=(3, 2)), epochs=1, verbose=0)
    _set_state(model, "p", 0.0)
    expected = tree_numpy(model(tokens))
    plain = keras_gradnets.finalize(model)
    assert not _library_layers(plain)
    cells = [
        type(layer.cell).__name__
        for layer in plain._flatten_layers()
        if isinstance(layer, keras.layers.RNN)
    ]
    assert cells == ["LSTMCell"] * (2 if bidirectional else 1)
    if bidirectional:
        wrapper = plain.get_layer("bidirectional")
        assert isinstance(wrapper, keras.layers.Bidirectional)
    assert_tree_close(plain(tokens), expected)


def test_time_distributed_library_layers_finalize_inside_the_wrapper():
    inputs = keras.Input((5, 4))
    h = keras.layers.TimeDistributed(layers.GReLU(g=1.0), name="relu")(inputs)
    h = keras.layers.TimeDistributed(
        layers.GradNet(
            keras.layers.Dense(3), keras.layers.Dense(3, activation="tanh")
        ),
        name="dense",
    )(h)
    h = keras.layers.TimeDistributed(
        layers.GradualActivation("tanh"), name="early"
    )(h)
    model = keras.Model(inputs, h)
    _set_state(model, "g", 1.0)
    model.get_layer("early").layer.g.assign(0.0)
    x = RNG.normal(size=(2, 5, 4)).astype("float32")
    plain = keras_gradnets.finalize(model)
    assert not _library_layers(plain)
    wrapped = [
        (layer.name, type(layer.layer).__name__)
        for layer in plain.layers
        if isinstance(layer, keras.layers.TimeDistributed)
    ]
    assert wrapped == [("relu", "ReLU"), ("dense", "Dense")]
    assert_tree_close(plain(x), model(x))


# Models with op nodes and gates in their graphs, small enough for CI;
# the other keras.applications models run with --runslow.
APPLICATIONS = ["MobileNetV3Small", "ConvNeXtTiny", "EfficientNetB0"]


def _application_names():
    return sorted(
        name
        for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name))
    )


# The smallest input keras.applications accepts: 32, except these.
_MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def _check_application(name):
    size = _MIN_SIZE.get(name, 32)
    try:
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=5
        )
    except ValueError as error:
        if "not available with the torch backend" in str(error):
            pytest.skip(str(error).split(".")[0])
        raise
    x = RNG.normal(size=(2, size, size, 3)).astype("float32")
    expected = tree_numpy(model(x))
    gradual = keras_gradnets.gradualize(model)
    assert _library_layers(gradual), f"{name}: nothing converted"
    _set_state(gradual, "g", 0.0)
    assert np.isfinite(tree_numpy(gradual(x))).all(), name
    _set_state(gradual, "g", 1.0)
    assert_tree_close(gradual(x), expected)
    plain = keras_gradnets.finalize(gradual)
    assert not _library_layers(plain)
    assert_tree_close(plain(x), expected)
    _assert_same_layers(model, plain, name)


def _assert_same_layers(original, plain, name):
    """Same names, types and configs, nested models layer by layer."""
    old = {
        layer.name: layer
        for layer in original.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }
    for layer in plain.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        before = old.pop(layer.name)
        assert type(layer) is type(before), (name, layer.name)
        if isinstance(layer, keras.Model):
            _assert_same_layers(before, layer, name)
            continue
        assert layer.get_config() == before.get_config(), (name, layer.name)
    assert not old, f"{name}: layers lost: {sorted(old)}"


@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications(name):
    _check_application(name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in _application_names() if n not in APPLICATIONS]
)
def test_every_other_keras_application(name):
    _check_application(name)


def test_gradualize_prints_what_it_converted_and_kept(capsys):
    keras_gradnets.gradualize(_ops_graph())
    summary = capsys.readouterr().out
    assert "model 'ops_graph': 2 layers converted" in summary
    assert "1 x Dense -> GReLU" in summary
    assert "1 x Dropout -> GradualDropout" in summary
    assert "kept 2 gates: hard_sigmoid, gate" in summary
    keras_gradnets.gradualize(_ops_graph(), verbose=False)
    assert capsys.readouterr().out == ""


@keras.saving.register_keras_serializable(package="tests")
class Block(keras.layers.Layer):
    """A custom block that makes its sub-layers in its own code."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, activation="gelu", name="ffn")
        self.gate = keras.layers.Dense(4, activation="sigmoid", name="gate")
        self.dropout = keras.layers.Dropout(0.2)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.gate.build(input_shape)

    def call(self, x, training=None):
        h = self.dense(x) * self.gate(x)
        return self.dropout(h, training=training)


def test_gradualize_reaches_inside_a_custom_block(capsys):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(Block(name="block")(inputs))
    original = keras.Model(inputs, outputs)
    x = RNG.normal(size=(3, 4)).astype("float32")
    model = keras_gradnets.gradualize(original)
    summary = capsys.readouterr().out
    assert "1 x Block -> GradualSublayers" in summary
    assert "1 x Dense activation -> GradualActivation" in summary
    assert "1 x Dropout -> GradualDropout" in summary
    assert "kept 1 possible gates inside layers: gate" in summary

    _set_state(model, "g", 1.0)
    assert_tree_close(model(x), original(x))
    # At g=0 the block's activation is linear and its dropout gone; the
    # sigmoid gate stays.
    _set_state(model, "g", 0.0)
    block = model.get_layer("block").layer
    linear = ops.matmul(x, block.dense.kernel) + block.dense.bias
    head = model.layers[-1]
    assert_tree_close(
        model(x, training=True), head(linear * block.gate(x)), atol=1e-5
    )
    _set_state(model, "g", 1.0)
    plain = keras_gradnets.finalize(model)
    assert type(plain.get_layer("block")) is Block
    assert_tree_close(plain(x), original(x))


@keras.saving.register_keras_serializable(package="tests")
class StackBlock(keras.layers.Layer):
    """A custom block that keeps its sub-layers in a list, a dict or a
    tuple (`container`), with one activation layer held twice: in the
    container and in an attribute."""

    def __init__(self, container="list", **kwargs):
        super().__init__(**kwargs)
        self.container = container
        self.act = keras.layers.Activation("tanh", name="inner_tanh")
        dense = keras.layers.Dense(4, activation="gelu", name="inner_dense")
        dropout = keras.layers.Dropout(0.2, name="inner_dropout")
        if container == "dict":
            self.stack = {"dense": dense, "act": self.act, "dropout": dropout}
        else:
            stack = [dense, self.act, dropout]
            self.stack = stack if container == "list" else tuple(stack)

    def sublayers(self):
        if self.container == "dict":
            return [self.stack[k] for k in ("dense", "act", "dropout")]
        return list(self.stack)

    def build(self, input_shape):
        self.sublayers()[0].build(input_shape)

    def call(self, x, training=None):
        dense, act, dropout = self.sublayers()
        h = dense(x)
        return dropout(act(h) + self.act(h), training=training)

    def get_config(self):
        return {**super().get_config(), "container": self.container}


def _stack_model(container):
    inputs = keras.Input((4,))
    block = StackBlock(container, name="block")
    return keras.Model(inputs, keras.layers.Dense(2)(block(inputs)))


@pytest.mark.parametrize("container", ["list", "dict"])
def test_gradualize_reaches_sub_layers_in_lists_and_dicts(container, tmp_path):
    original = _stack_model(container)
    x = RNG.normal(size=(3, 4)).astype("float32")
    model = keras_gradnets.gradualize(original, verbose=False)
    block = model.get_layer("block").layer
    dense, act, dropout = block.sublayers()
    assert isinstance(dense.activation, layers.GradualActivation)
    assert isinstance(dropout, layers.GradualDropout)
    # The layer held twice gets one twin, in both places.
    assert isinstance(act, layers.GradualActivation)
    assert block.act is act

    _set_state(model, "g", 1.0)
    assert_tree_close(model(x), original(x))
    # At g=0 the block is linear and dropout-free, even in training.
    _set_state(model, "g", 0.0)
    linear = ops.matmul(x, dense.kernel) + dense.bias
    head = model.layers[-1]
    assert_tree_close(model(x, training=True), head(2 * linear), atol=1e-5)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert_tree_close(loaded(x), model(x))
    _set_state(loaded, "g", 1.0)
    plain = keras_gradnets.finalize(loaded)
    assert type(plain.get_layer("block")) is StackBlock
    assert not _library_layers(plain)
    assert_tree_close(plain(x), original(x))


def test_gradualize_warns_naming_layers_it_cannot_reach():
    with pytest.warns(
        UserWarning, match="inside layer 'block'.*inner_dense.*inner_tanh"
    ):
        keras_gradnets.gradualize(_stack_model("tuple"), verbose=False)
