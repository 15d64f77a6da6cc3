"""What dynamic layers know of the models around them.

A dynamic layer keeps no reference to a model or to another layer. This
module keeps, weakly:

* for each linked dynamic layer (`link_dynamic_layers`), the models it was
  linked in, the dynamic layer it reads (its source) and the layers that
  read it through a kernel (its consumers);
* for each dynamic layer that takes its capacity from another (the gate
  of a gated feed-forward network from its intermediate layer), that
  other layer, its leader;
* for each dynamic layer read inside a block's own code, which no graph
  records (a transformer block's intermediate feed-forward layer), the
  layer that reads it;
* for each model whose compiled functions traced dynamic layers, those
  layers and the capacity each function traced.

TensorFlow and JAX trace a layer's capacity into a compiled function as
static slices. A function traced at one capacity is made again at its next
call once a capacity differs (`note_trace`), whatever changed it: `grow`,
`set_capacity`, `set_weights`, `load_weights`, `EarlyStopping` restoring
its best weights or `BackupAndRestore`. Nothing is made again where the
capacity changes: the variables only say what the capacity is.
"""

import sys
import weakref

import keras

KINDS = ("train", "test", "predict")


class _Links:
    def __init__(self):
        self.models = []
        self.source = None
        self.consumers = []
        self.through = []


_LINKS = weakref.WeakKeyDictionary()
# follower -> its leader.
_LEADERS = weakref.WeakKeyDictionary()
# layer -> the layer that reads it inside a block's code.
_INNER_READERS = weakref.WeakKeyDictionary()
# layer -> the compiled functions (`_CapacityGuard`s) that traced it.
_GUARDS = weakref.WeakKeyDictionary()


def _alive(refs):
    return [x for x in (ref() for ref in refs) if x is not None]


def source_of(layer):
    """The dynamic layer whose units `layer` reads, if linked."""
    links = _LINKS.get(layer)
    source = None if links is None else links.source
    return None if source is None else source()


def consumers_of(layer):
    """The linked layers that read `layer`'s units through a kernel."""
    links = _LINKS.get(layer)
    return [] if links is None else _alive(links.consumers)


def readers_through_of(layer):
    """The linked layers with a kernel that read `layer`'s units through
    activations, dropout, pooling or `Flatten`: input row `r` of their
    kernel reads unit `r % layer.units`."""
    links = _LINKS.get(layer)
    return [] if links is None else _alive(links.through)


def models_of(layer):
    """The models `layer` was linked in, that still exist."""
    links = _LINKS.get(layer)
    return [] if links is None else _alive(links.models)


def follow(follower, leader):
    """Records that `follower` takes `leader`'s capacity at each of its
    changes (`DynamicLayer.set_capacity`)."""
    _LEADERS[follower] = weakref.ref(leader)


def leader_of(layer):
    """The layer whose capacity `layer` takes, if any."""
    leader = _LEADERS.get(layer)
    return None if leader is None else leader()


def followers_of(layer):
    """The layers that take `layer`'s capacity."""
    return [f for f, leader in list(_LEADERS.items()) if leader() is layer]


def read_inside(producer, reader):
    """Records that `reader` reads `producer`'s units inside the code of
    the block that holds both, where no model's graph shows it."""
    _INNER_READERS[producer] = weakref.ref(reader)


def inner_reader_of(layer):
    """The layer that reads `layer` inside a block's code, if any."""
    reader = _INNER_READERS.get(layer)
    return None if reader is None else reader()


def record(producer, model, consumers, dynamic_consumers, through):
    """Records that `producer` is linked in `model`, read by `consumers`
    (and by `through`, see `readers_through_of`), and the source of the
    dynamic layers among `dynamic_consumers`."""
    links = _LINKS.setdefault(producer, _Links())
    if model not in models_of(producer):
        links.models.append(weakref.ref(model))
    links.consumers = [weakref.ref(c) for c in consumers]
    links.through = [weakref.ref(c) for c in through]
    for consumer in dynamic_consumers:
        _LINKS.setdefault(consumer, _Links()).source = weakref.ref(producer)


def optimizer_ready(layer):
    """Whether a model of `layer` has a built optimizer (slots for all)."""
    return any(
        getattr(model, "optimizer", None) is not None and model.optimizer.built
        for model in models_of(layer)
    )


def remake_functions(model):
    """Re-creates the compiled functions `model` already made.

    `fit`, `evaluate` and `predict` look the functions up at every step, so
    the next step traces the layers as they are now.
    """
    for kind in KINDS:
        if getattr(model, f"{kind}_function", None) is not None:
            getattr(model, f"make_{kind}_function")(force=True)


def capacity_changed(layer):
    """Makes again, now, every compiled function that traced `layer` at
    another capacity.

    The owners of a capacity change (`set_capacity`, and so `grow` and
    `CapacityGrowth`, and loading weights) call it once the new capacity
    is written. Making a function now, not at its next call, matters on
    JAX: a distributed function is made from the variables' values (their
    shardings), which `fit` keeps outside the variables between steps;
    inside `fit` the owner runs in a callback that has read `self.model`,
    which syncs them.
    """
    for guard in list(_GUARDS.get(layer, ())):
        model = guard.model()
        if model is None or not guard.stale():
            continue
        if getattr(model, f"{guard.kind}_function", None) is guard:
            guard.remake(model)


class _CapacityGuard:
    """A model's compiled function, made again once a traced capacity
    changed.

    Before each call it compares the capacities of the dynamic layers the
    function traced with their capacities now: Python integers the layers
    keep, so the check reads nothing from the device.
    """

    def __init__(self, model, kind, function):
        self.model = weakref.ref(model)
        self.kind = kind
        self.function = function
        self.traced = weakref.WeakKeyDictionary()

    def stale(self):
        return any(
            layer.traced_capacity != capacity
            for layer, capacity in self.traced.items()
        )

    def __call__(self, *args, **kwargs):
        if self.stale():
            model = self.model()
            self.remake(model)
            return getattr(model, f"{self.kind}_function")(*args, **kwargs)
        return self.function(*args, **kwargs)

    def remake(self, model):
        """Makes `model`'s function of this kind again."""
        # JAX reuses the trace of a step method while a function that
        # traced it lives: let the stale one go before making anew.
        self.function = None
        getattr(model, f"make_{self.kind}_function")(force=True)


def _running_step():
    """The model whose `train_step`, `test_step` or `predict_step` is on
    the call stack, and the kind of that step; `(None, None)` if none.

    Keras's compiled functions trace the step methods, so the innermost
    such frame names the function a layer is traced into, on every
    backend (JAX's steps call the model through `stateless_call`, which
    leaves no other trace of it).
    """
    frame = sys._getframe(2)
    while frame is not None:
        kind = frame.f_code.co_name.removesuffix("_step")
        if kind in KINDS and kind != frame.f_code.co_name:
            model = frame.f_locals.get("self")
            if isinstance(model, keras.Model):
                return model, kind
        frame = frame.f_back
    return None, None


def note_trace(layer):
    """Guards the compiled function `layer` is being traced into.

    A dynamic layer's `call` runs this. Inside the step a compiled train,
    test or predict function of a model runs, that function is wrapped so
    that its next call after a change of `layer`'s capacity makes it
    again. Torch needs none of it: it runs layers eagerly, and
    `torch.compile` guards the Python integers it traced.
    """
    if keras.backend.backend() == "torch":
        return
    model, kind = _running_step()
    if model is None:
        return
    function = getattr(model, f"{kind}_function", None)
    if function is None:
        return
    if not isinstance(function, _CapacityGuard):
        function = _CapacityGuard(model, kind, function)
        setattr(model, f"{kind}_function", function)
    function.traced.setdefault(layer, layer.traced_capacity)
    _GUARDS.setdefault(layer, weakref.WeakSet()).add(function)
