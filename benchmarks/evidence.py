"""Does it help? Each family against its plain twin, on offline data.

Every row trains a keras_gradnets network and its plain twin (the same
network without the family's layers or callback) with the same seeds,
data, optimizer and epochs, as a user would, and prints the medians over
seeds of the final validation score (accuracy, or MSE for `sine`), its
spread (min-max), the training compute of the network (trainable
parameters in use x examples, summed over the run; for growth, the
active parameters of each epoch) over its twin's, the wall time over
its twin's, and for growth the number of growths of each seed. Final
scores, not the best epoch's: picking the best epoch on the validation
data would flatter both sides.

Tasks: `sklearn.datasets.load_digits` (1200 train / 597 validation, the
split of `benchmarks/growth_trigger.py`) and notebook 02's `sin(x)`
regression. Rows:

* `GReLU 12x64`: a 12-layer ReLU MLP; twin GReLU + `GradNetScheduler`.
* `gradualize CNN`: notebook 02's digits CNN through `kg.gradualize`.
* `DropIn 25x64`: 25 ReLU layers, a DropIn every 5 (notebook 04).
* `mollified 7x100`: a 7-layer sigmoid MLP of `MollifiedDense` layers
  (notebook 03's linear schedule, c=20).
* `width growth digits` / `width growth sine`: `DynamicDense` layers
  from a fifth of their width with `CapacityGrowth()` defaults, against
  the static full-width network (`benchmarks/growth_trigger.py`'s tasks);
  the last column gives, per seed, the number of growths and the compute
  at which the grown network first came within 1 point of the static
  network's final accuracy (within 2% of its final MSE on sine), as a
  fraction of the static network's.
* `width growth sine budget`: the sine row growing on a budget instead of
  on a plateau, one chunk after 10%, 20%, 30% and 40% of the run
  (`CapacityGrowth(grow_at=[0.1, 0.2, 0.3, 0.4])`), to full width.
* `architecture search`: one fit of the joint depth (1-3) and width (8,
  16, 32, 64) search of `benchmarks/architecture_search.py` with
  `TemperatureScheduler()`'s defaults, scored as `finalize` returns it
  (no finetuning), against the largest network of the space (3 x 64); the
  last column gives the chosen widths.

* `depth stacking LM` / `width growth LM`: the character-level language
  model of `benchmarks/depth_stacking.py` (4 keras-hub transformer blocks
  on the standard library's sources, validation loss in nats per byte),
  its 4 blocks trained from scratch as the twin, against 2 blocks grown
  to 4 by stacking on top after a quarter of the run, grown blocks
  entering on a 200-step ramp (`--runs top --grown-gate 1 --grow-at 0.25
  --ramp-steps 200`), or against heads and feed-forward width grown from
  a quarter, one head and chunk more after 25%, 40% and 55% of the run
  (`--runs width --width-grow-at 0.25 0.4 0.55`, the schedule the sweep
  in docs/evidence.md chose); the last column gives the compute at which
  the grown model first came within 2% of its twin's final loss, as a
  fraction of the twin's.

    python benchmarks/evidence.py [--seeds 0 1 2 3 4] [--backend jax]
        [--rows "GReLU 12x64" ...]
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import time

from depth_stacking import compute_to_reach
from depth_stacking import compute_to_within_2_percent
from depth_stacking import train

ROWS = [
    "GReLU 12x64",
    "gradualize CNN",
    "DropIn 25x64",
    "mollified 7x100",
    "width growth digits",
    "width growth sine",
    "width growth sine budget",
    "architecture search",
    "depth stacking LM",
    "width growth LM",
]

# The language-model rows: `depth_stacking.train`'s arguments for the
# grown model (its twin is `deep`).
LM_ROWS = {
    "depth stacking LM": dict(
        kind="top", grow_at=0.25, grown_gate=1.0, ramp_steps=200
    ),
    "width growth LM": dict(kind="width", width_grow_at=(0.25, 0.4, 0.55)),
}


@functools.cache
def deep_lm(seed, backend):
    """The language-model rows' twin, trained once per seed."""
    return train("deep", seed, backend=backend)


def lm_runs(row, seeds, backend):
    """The rows of `LM_ROWS`, each model in its own process."""
    results = []
    for seed in seeds:
        deep = deep_lm(seed, backend)
        grown = train(seed=seed, backend=backend, **LM_ROWS[row])
        fraction = compute_to_within_2_percent(grown, deep)
        note = "never" if fraction is None else f"{fraction:.2f}"
        for family, run in ((True, grown), (False, deep)):
            results.append(
                {
                    "seed": seed,
                    "family": family,
                    "score": run["val_loss"][-1],
                    "compute": run["compute"][-1],
                    "seconds": run["seconds"],
                    "notes": [note] if family else [],
                }
            )
    return results


def worker(row, seeds):
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    import keras_gradnets as kg

    sine = row.startswith("width growth sine")
    if sine:
        x = np.linspace(-2 * np.pi, 2 * np.pi, 1000, dtype="float32")[:, None]
        shifted = x + (x[1, 0] - x[0, 0]) / 2
        train, val = (x, np.sin(x)), (shifted, np.sin(shifted))
        epochs, batch, rate, score = 150, 50, 1e-2, "val_loss"
    else:
        x, y = load_digits(return_X_y=True)
        x = (x / 16).astype("float32")
        order = np.random.default_rng(0).permutation(len(x))
        x, y = x[order], y[order]
        if row == "gradualize CNN":
            x = x.reshape(-1, 8, 8, 1)
        train, val = (x[:1200], y[:1200]), (x[1200:], y[1200:])
        epochs = {"width growth digits": 60, "gradualize CNN": 20}.get(row, 30)
        batch, rate, score = 32, 1e-3, "val_accuracy"
    steps = epochs * -(-len(train[0]) // batch)

    def compile_(model):
        if sine:
            model.compile(keras.optimizers.Adam(rate), "mse")
        else:
            model.compile(
                keras.optimizers.Adam(rate),
                keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"],
            )
        return model

    def head():
        if sine:
            return keras.layers.Dense(1)
        return keras.layers.Dense(10, activation="softmax")

    def mlp(inputs, hidden):
        return keras.Sequential([keras.Input(inputs), *hidden, head()])

    def build(family):
        """The network and its callbacks; `family=False` is the twin."""
        if row == "GReLU 12x64":
            act = kg.layers.GReLU if family else keras.layers.ReLU
            hidden = []
            for _ in range(12):
                hidden += [keras.layers.Dense(64), act()]
            callbacks = [kg.callbacks.GradNetScheduler(tau=epochs // 2)]
            return mlp((64,), hidden), callbacks if family else []
        if row == "gradualize CNN":
            model = keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    keras.layers.Conv2D(
                        16, 3, padding="same", activation="relu"
                    ),
                    keras.layers.MaxPooling2D(),
                    keras.layers.Conv2D(
                        32, 3, padding="same", activation="relu"
                    ),
                    keras.layers.Flatten(),
                    keras.layers.Dense(64, activation="relu"),
                    head(),
                ]
            )
            if not family:
                return model, []
            model = kg.gradualize(model, verbose=False)
            return model, [kg.callbacks.GradNetScheduler(tau=epochs // 2)]
        if row == "DropIn 25x64":
            inputs = keras.Input((64,))
            h = inputs
            for _ in range(5):
                h = keras.layers.Dense(64, activation="relu")(h)
            for _ in range(4):
                new = h
                for _ in range(5):
                    new = keras.layers.Dense(64, activation="relu")(new)
                h = kg.layers.DropIn()([h, new]) if family else new
            model = keras.Model(inputs, head()(h))
            callbacks = [kg.callbacks.DropInScheduler(steps // 2)]
            return model, callbacks if family else []
        if row == "architecture search":
            if not family:
                hidden = [
                    keras.layers.Dense(64, activation="relu") for _ in range(3)
                ]
                return mlp((64,), hidden), []
            inputs = keras.Input((64,))
            blocks = [
                [
                    keras.layers.Dense(64, activation="relu"),
                    kg.layers.ConcreteWidth([8, 16, 32, 64], gamma=1e-3),
                ]
                for _ in range(3)
            ]
            heads = kg.layers.attach_heads(inputs, blocks, head=head())
            outputs = kg.layers.ConcreteDepth(gamma=1e-2)(heads)
            model = keras.Model(inputs, outputs)
            return model, [kg.callbacks.TemperatureScheduler()]
        if row == "mollified 7x100":
            hidden = [
                kg.layers.MollifiedDense(100, "sigmoid", c=20.0)
                if family
                else keras.layers.Dense(100, activation="sigmoid")
                for _ in range(7)
            ]
            callbacks = [
                kg.callbacks.MollifierScheduler(
                    kg.schedules.LinearDecay(steps), use_loss=False
                )
            ]
            return mlp((64,), hidden), callbacks if family else []
        units, inputs, activation = (
            (500, (1,), "tanh") if sine else (100, (64,), "relu")
        )
        layers = 1 if sine else 2
        if family:
            hidden = [
                kg.layers.DynamicDense(units, chunks=5, activation=activation)
                for _ in range(layers)
            ]
            growth = kg.callbacks.CapacityGrowth(
                grow_at=[0.1, 0.2, 0.3, 0.4] if row.endswith("budget") else None
            )
            return mlp(inputs, hidden), [growth]
        hidden = [
            keras.layers.Dense(units, activation=activation)
            for _ in range(layers)
        ]
        return mlp(inputs, hidden), []

    def active_parameters(model):
        """Trainable parameters in use: the active units of a dynamic
        layer, and the rows of the next `Dense` that read them."""
        total, rows = 0, None
        for layer in model.layers:
            if isinstance(layer, kg.layers.DynamicDense):
                total += ((rows or layer.input_dim) + 1) * layer.active_units
                rows = layer.active_units
            elif rows is not None:
                total += (rows + 1) * layer.units
                rows = None
            else:
                total += sum(
                    int(np.prod(v.shape)) for v in layer.trainable_weights
                )
        return total

    class Compute(keras.callbacks.Callback):
        """Active parameters x examples, summed over the epochs, and the
        sum at the end of each epoch."""

        def __init__(self):
            super().__init__()
            self.total = 0
            self.history = []

        def on_epoch_begin(self, epoch, logs=None):
            self.total += active_parameters(self.model) * len(train[0])

        def on_epoch_end(self, epoch, logs=None):
            self.history.append(self.total)

    def reached(twin_final):
        """Whether a score is within 1 point (accuracy) or 2% (MSE) of the
        twin's final score."""
        if score == "val_loss":
            return lambda value: value <= 1.02 * twin_final
        return lambda value: value >= twin_final - 0.01

    results = []
    for seed in seeds:
        curves = {}
        for family in (True, False):
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            model, callbacks = build(family)
            compile_(model)
            counter = Compute()
            start = time.perf_counter()
            history = model.fit(
                *train,
                validation_data=val,
                epochs=epochs,
                batch_size=batch,
                verbose=0,
                callbacks=[*callbacks, counter],
            )
            seconds = time.perf_counter() - start
            final = float(history.history[score][-1])
            notes = [
                str(len(c.events))
                for c in callbacks
                if isinstance(c, kg.callbacks.CapacityGrowth)
            ]
            curves[family] = (counter.history, history.history[score])
            if row == "architecture search" and family:
                # What the user keeps: the finalized plain network.
                plain = compile_(kg.finalize(model))
                final = float(plain.evaluate(*val, verbose=0)[1])
                dense = [
                    layer
                    for layer in plain.layers
                    if isinstance(layer, keras.layers.Dense)
                ]
                notes = ["-".join(str(layer.units) for layer in dense[:-1])]
            results.append(
                {
                    "seed": seed,
                    "family": family,
                    "score": final,
                    "compute": counter.total,
                    "seconds": seconds,
                    "notes": notes,
                }
            )
        if row.startswith("width growth"):
            net, twin = results[-2:]
            fraction = compute_to_reach(
                *curves[True], reached(twin["score"]), twin["compute"]
            )
            net["notes"].append(
                "never" if fraction is None else f"{fraction:.2f}"
            )
    print(json.dumps(results))


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seeds)
        return
    print(
        f"backend {args.backend}, seeds {args.seeds}; medians over seeds "
        "(min-max); accuracy: higher is better, MSE and loss: lower"
    )
    print(
        f"{'row':<25}{'network':>24}{'twin':>24}{'diff':>8}"
        f"{'compute':>9}{'time':>7}  per seed: growths, chosen, or compute "
        "to within 2%"
    )
    for row in args.rows:
        if row in LM_ROWS:
            runs = lm_runs(row, args.seeds, args.backend)
        else:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", row, "--seeds"]
                + [str(s) for s in args.seeds],
                env={**os.environ, "KERAS_BACKEND": args.backend},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            runs = json.loads(out.splitlines()[-1])

        def side(family, key, runs=runs):
            return np.array([r[key] for r in runs if r["family"] == family])

        net, twin = side(True, "score"), side(False, "score")
        digits = 4 if "sine" in row or row.endswith("LM") else 3

        def cell(values, digits=digits):
            return (
                f"{np.median(values):.{digits}f} "
                f"({values.min():.{digits}f}-{values.max():.{digits}f})"
            )

        compute = np.median(side(True, "compute") / side(False, "compute"))
        seconds = np.median(side(True, "seconds") / side(False, "seconds"))
        print(
            f"{row:<25}{cell(net):>24}{cell(twin):>24}"
            f"{np.median(net) - np.median(twin):>+8.{digits}f}"
            f"{compute:>9.2f}{seconds:>7.2f}  "
            + " ".join(n for r in runs if r["family"] for n in r["notes"])
        )


if __name__ == "__main__":
    main()
