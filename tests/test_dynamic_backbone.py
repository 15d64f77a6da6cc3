"""growing_backbone: the feed-forward width of every block of a keras-hub
backbone grows inside `fit`, the backbone keeps its class so that the task
models take it, `.keras` round trips, and finalize gives the backbone's own
class at the grown width."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_gradnets as kg
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicBackbone
from keras_gradnets.layers import DynamicDense
from keras_gradnets.layers import link_dynamic_layers
from tests.helpers import CrashAt

VOCABULARY = 32
LENGTH = 6
WIDTH = 16


def _gpt2():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=WIDTH,
        max_sequence_length=LENGTH,
        dropout=0.0,  # A resumed run does not draw the same dropout masks.
    )


def _mistral():
    return keras_hub.models.MistralBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=8,
        intermediate_dim=WIDTH,
    )


# A backbone and the causal language model that takes it.
MODELS = {
    "gpt2": (_gpt2, keras_hub.models.GPT2CausalLM),
    "mistral": (_mistral, keras_hub.models.MistralCausalLM),
}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _tokens(n=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCABULARY, size=(n, LENGTH)).astype("int32")
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    return x, tokens


def _task(name, seed=3, **options):
    backbone, task = MODELS[name]
    keras.utils.set_random_seed(seed)
    # Growths draw from the backbone's seed: the same in a resumed run.
    grown = kg.growing_backbone(backbone(), chunks=4, seed=7, **options)
    model = task(grown, preprocessor=None)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _config(backbone):
    return {k: v for k, v in backbone.get_config().items() if k != "name"}


def _intermediates(backbone):
    return [
        layer._feedforward_intermediate_dense
        for layer in backbone.layers
        if isinstance(
            getattr(layer, "_feedforward_intermediate_dense", None),
            DynamicDense,
        )
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_task_model_grows_its_backbone_inside_fit(name, tmp_path):
    task = _task(name)
    backbone = task.backbone
    assert isinstance(backbone, MODELS[name][0]().__class__)
    inner = _intermediates(backbone)
    assert len(inner) == 2
    x, y = _tokens()
    fit = dict(batch_size=8, verbose=0)
    task.fit(x, y, epochs=1, **fit)
    # The compiled step computed a quarter of the width.
    assert [layer.traced_capacity for layer in inner] == [(WIDTH // 4, 0)] * 2
    link_dynamic_layers(task)
    before = task.predict(x, verbose=0)
    for layer in inner:
        layer.grow(freeze=False)
    np.testing.assert_allclose(task.predict(x, verbose=0), before, atol=1e-5)
    growth = CapacityGrowth(grow_at=[1], freeze=False)
    history = task.fit(x, y, epochs=2, callbacks=[growth], **fit)
    grown = [layer.traced_capacity for layer in inner]
    assert grown == [(3 * WIDTH // 4, 0)] * 2
    assert sorted(growth.events[0]["layers"]) == sorted(x.name for x in inner)
    assert "capacity" in history.history

    path = str(tmp_path / "task.keras")
    task.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.backbone) is type(backbone)
    assert [x.active_units for x in _intermediates(loaded.backbone)] == [12] * 2
    trained = task.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), trained, atol=1e-5)

    plain = kg.finalize(loaded.backbone)
    original = MODELS[name][0]()
    assert type(plain) is type(original)
    assert _config(plain) == {**_config(original), "intermediate_dim": 12}
    finished = MODELS[name][1](plain, preprocessor=None)
    outputs = finished.predict(x, verbose=0)
    np.testing.assert_allclose(outputs, trained, atol=1e-5)


def test_resumed_growth_matches_an_uninterrupted_run(tmp_path):
    # A keras-hub task does not compile itself again from a `.keras` file
    # (its `compile` is its own): runs resume from `BackupAndRestore`.
    x, y = _tokens()
    fit = dict(epochs=4, batch_size=8, shuffle=False, verbose=0)

    def growth():
        return CapacityGrowth(grow_at=[1, 3], freeze=False)

    full = _task("gpt2", seed=4)
    full.fit(x, y, callbacks=[growth()], **fit)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = _task("gpt2", seed=4)
    with pytest.raises(RuntimeError, match="Interrupted"):
        first.fit(x, y, callbacks=[growth(), backup, CrashAt(2)], **fit)
    # A new process builds a new task: the backup holds all state.
    resumed = _task("gpt2", seed=5)
    resumed.fit(x, y, callbacks=[growth(), backup], **fit)
    widths = [x.active_units for x in _intermediates(resumed.backbone)]
    assert widths == [12] * 2
    for a, b in zip(full.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5)


def test_the_gates_grow_with_their_blocks():
    task = _task("mistral")
    blocks = [x for x in task.backbone.layers if "transformer_layer" in x.name]
    link_dynamic_layers(task)
    for block in blocks:
        block._feedforward_intermediate_dense.grow()
        gate = block._feedforward_gate_dense
        assert isinstance(gate, DynamicDense)
        assert gate.traced_capacity == (WIDTH // 2, WIDTH // 4)


def test_finalize_needs_one_width_for_every_block():
    task = _task("gpt2")
    link_dynamic_layers(task)
    first = _intermediates(task.backbone)[0]
    first.grow(freeze=False)
    weights = [_np(v).copy() for v in task.backbone.weights]
    with pytest.raises(ValueError, match=r"\[8, 4\].*select='all'"):
        kg.finalize(task.backbone)
    for value, variable in zip(weights, task.backbone.weights, strict=True):
        np.testing.assert_array_equal(_np(variable), value)


def test_the_registered_mixin_rebuilds_any_dynamic_backbone():
    # `.keras` files name the mixin, whose `from_config` makes the subclass
    # of the saved backbone class.
    backbone = kg.growing_backbone(_gpt2(), chunks=2, initial_chunks=2)
    rebuilt = DynamicBackbone.from_config(backbone.get_config())
    assert type(rebuilt) is type(backbone)
    assert [x.active_units for x in _intermediates(rebuilt)] == [WIDTH] * 2


def test_bad_arguments():
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="replace_layers"):
        kg.growing_backbone(functional, chunks=2)
    with pytest.raises(ValueError, match="chunks"):
        kg.growing_backbone(_gpt2(), chunks=0)
    with pytest.raises(ValueError, match="dense_names"):
        kg.growing_backbone(_gpt2(), chunks=2, dense_names=("a", "b"))
    with pytest.raises(ValueError, match="growing_backbone"):
        kg.growing_backbone(
            keras_hub.models.GPT2CausalLM(_gpt2(), preprocessor=None), chunks=2
        )
