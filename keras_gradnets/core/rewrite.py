"""The one model-rewriting engine: `gradualize` and `finalize` use it.

A `Rewriter` builds a new model in which each layer of the old one is
replaced by what `Rewriter.replace(layer)` answers: a list of layers that
are called one after the other where the layer was called (an empty list
passes the input through), or `None` for a copy of the layer with its
weights. Everything else is kept as it was:

* functional models are replayed by `keras.models.clone_model`, so
  operation nodes (`x + 1.0`, `x[:, 0]`, `keras.ops.*` calls, the masks of
  `Embedding(mask_zero=True)`) pass through unchanged, with shared layers,
  several inputs and outputs, and dict inputs and outputs;
* Sequential models are rebuilt layer by layer; nested Sequential and
  functional models are rewritten too;
* a new layer gets its weights only once the whole new model is built
  (`Rewriter.copy` and `Rewriter.weights_from` queue them), so a
  replacement may be an unbuilt layer made from a config.
"""

import collections
import inspect

import keras
from keras import tree


def check_rewritable(model):
    """Raises a `ValueError` saying why, unless `model` is a built
    Sequential or functional model."""
    if not isinstance(model, keras.Sequential) and not hasattr(model, "inputs"):
        raise ValueError(
            f"Cannot rewrite model '{model.name}' "
            f"({model.__class__.__name__}): only Sequential and "
            "functional models can be rebuilt. For a subclassed model, "
            "put the layers you want in its code."
        )
    if not model.built or not model.inputs:
        raise ValueError(
            f"Model '{model.name}' is not built. Call it on data or start "
            "it with `keras.Input(...)` first."
        )


class Rewriter:
    """Rewrites a model; subclasses say what replaces each layer.

    Subclasses override `replace(layer)`, and `input_index(layer)` for a
    layer called on a list whose replacements read one of its items. While
    `replace` runs, `readers(layer)` lists what reads the layer's outputs
    in the model being rewritten.
    """

    def __init__(self):
        self._weights = []
        self._after = {}
        self._identities = set()
        self._inputs = {}
        self._readers = {}
        self._tensor_readers = {}
        self._outputs = set()

    def replace(self, layer):
        """Returns the layers that stand for `layer`, or None for a copy
        (for a model: the model rewritten)."""
        return None

    def input_index(self, layer):
        """The index of the input, in the list `layer` is called on, that
        its replacements read; None: they take the same inputs."""
        return None

    def copy(self, layer, weights=None, **changes):
        """A new layer from `layer`'s config with `changes`, whose weights
        will be `weights()` (by default `layer`'s own)."""
        new = layer.__class__.from_config({**layer.get_config(), **changes})
        self.weights_from(new, weights or layer.get_weights)
        return new

    def weights_from(self, new, weights):
        """Sets `new`'s weights to `weights()` once the new model is built."""
        self._weights.append((new, weights))

    def readers(self, layer):
        """The graph nodes that read `layer`'s outputs in the model being
        rewritten (each has `operation`, `arguments.keras_tensors` and
        `outputs`); `None` stands for an output of that model."""
        return self._readers.get(id(layer), [])

    def readers_of_tensor(self, tensor):
        """The nodes that read `tensor`, `None` for a model output."""
        found = list(self._tensor_readers.get(id(tensor), []))
        return found + ([None] if id(tensor) in self._outputs else [])

    def rewrite(self, model):
        """Returns the rewritten `model`, with the weights copied."""
        if not isinstance(model, keras.Model):
            check_rewritable(model)
        (new,) = self.replacements(model)
        for layer, weights in self._weights:
            layer.set_weights(weights())
        return new

    def replacements(self, layer):
        """The layers that stand for `layer`; a model `replace` leaves is
        rewritten."""
        layers = self.replace(layer)
        if layers is not None:
            return layers
        if isinstance(layer, keras.Model):
            return [self._model(layer)]
        return [self.copy(layer)]

    def _clone(self, operation):
        """One operation standing for `operation` (`clone_model`'s hook)."""
        if not isinstance(operation, keras.layers.Layer):
            return operation  # An op node holds no state: reuse it.
        layers = self.replacements(operation)
        if layers:
            new = layers[0]
            self._after[id(new)] = layers[1:]
        else:
            new = keras.layers.Identity(name=operation.name)
            self._identities.add(id(new))
        index = self.input_index(operation)
        if index is not None:
            self._inputs[id(new)] = index
        return new

    def _call(self, layer, *args, **kwargs):
        """Calls a replacement as `clone_model` replays the graph.

        It reads the one input its original names (`input_index`), drops
        keyword arguments its `call` does not take (the `mask=None` Keras
        records for some layers), then calls the rest of its chain.
        """
        if id(layer) in self._inputs:
            args = (args[0][self._inputs[id(layer)]], *args[1:])
        if id(layer) in self._identities:
            return args[0]
        if isinstance(layer, keras.layers.Layer):
            parameters = inspect.signature(layer.call).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                kwargs = {k: v for k, v in kwargs.items() if k in parameters}
        output = layer(*args, **kwargs)
        for after in self._after.get(id(layer), ()):
            output = after(output)
        return output

    def _model(self, model):
        check_rewritable(model)
        saved = self._readers, self._tensor_readers, self._outputs
        try:
            if isinstance(model, keras.Sequential):
                return self._sequential(model)
            self._index_graph(model)
            return keras.models.clone_model(
                model, clone_function=self._clone, call_function=self._call
            )
        finally:
            self._readers, self._tensor_readers, self._outputs = saved

    def _sequential(self, model):
        # A built Sequential model holds its graph as a functional model.
        self._index_graph(model._functional)
        spec = model.inputs[0]
        new_layers = [
            new for layer in model.layers for new in self.replacements(layer)
        ]
        return keras.Sequential(
            [keras.Input(batch_shape=spec.shape, dtype=spec.dtype)]
            + new_layers,
            name=model.name,
        )

    def _index_graph(self, model):
        tensor_readers = collections.defaultdict(list)
        # id of an operation -> the tensors its nodes in `model` output.
        produced = collections.defaultdict(list)
        for nodes in model._nodes_by_depth.values():
            for node in nodes:
                for tensor in node.arguments.keras_tensors:
                    tensor_readers[id(tensor)].append(node)
                produced[id(node.operation)].extend(node.outputs)
        self._tensor_readers = tensor_readers
        self._outputs = {id(t) for t in tree.flatten(model.outputs)}
        self._readers = {
            key: [
                reader
                for tensor in tensors
                for reader in self.readers_of_tensor(tensor)
            ]
            for key, tensors in produced.items()
        }
