"""When does `CapacityGrowth` grow on real data, with its defaults?

Trains dynamic networks as a new user would and prints, per task and
rule, the epochs at which each seed grew, the final active capacity and
the final validation score (medians over seeds), beside the static
full-width network:

* `digits`: `sklearn.datasets.load_digits` (1200 train / 597 validation),
  two `DynamicDense(100, chunks=5, activation="relu")` layers, Adam 1e-3,
  batch 32, 60 epochs; score: validation accuracy.
* `sine`: notebook 02's task, `sin(x)` on 1000 points in [-2pi, 2pi],
  one `DynamicDense(500, chunks=5, activation="tanh")`, Adam 1e-2, batch
  50, 150 epochs; score: validation MSE on shifted points.

Rules: `0.2 defaults` is `window=10, patience=10, min_delta=0` with no
relative threshold (the defaults of 0.2); `defaults` is
`CapacityGrowth()` as it is now, with `growth_init="random"` (the layers'
default before 0.3) and `"function_preserving"` (the default since), each
with `freeze=True` and `freeze=False`.

    python benchmarks/growth_trigger.py [--seeds 0 1 2] [--backend jax]
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys
import keras, numpy as np
from sklearn.datasets import load_digits
import keras_gradnets as kg

task, rule, growth_init, freeze, seed = sys.argv[1:6]
seed, freeze = int(seed), freeze == "freeze"
if task == "digits":
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    train, val = (x[:1200], y[:1200]), (x[1200:], y[1200:])
    epochs, batch, rate = 60, 32, 1e-3

    def hidden(dynamic):
        if dynamic:
            return [kg.layers.DynamicDense(100, chunks=5, activation="relu",
                                           growth_init=growth_init)
                    for _ in range(2)]
        return [keras.layers.Dense(100, activation="relu") for _ in range(2)]

    head = keras.layers.Dense(10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics, score = ["accuracy"], "val_accuracy"
    inputs = (64,)
else:
    x = np.linspace(-2 * np.pi, 2 * np.pi, 1000, dtype="float32")[:, None]
    shifted = x + (x[1, 0] - x[0, 0]) / 2
    train, val = (x, np.sin(x)), (shifted, np.sin(shifted))
    epochs, batch, rate = 150, 50, 1e-2

    def hidden(dynamic):
        if dynamic:
            return [kg.layers.DynamicDense(500, chunks=5, activation="tanh",
                                           growth_init=growth_init)]
        return [keras.layers.Dense(500, activation="tanh")]

    head, loss, metrics, score = keras.layers.Dense(1), "mse", [], "val_loss"
    inputs = (1,)

keras.utils.set_random_seed(seed)
dynamic = rule != "static"
model = keras.Sequential([keras.Input(inputs), *hidden(dynamic), head])
model.compile(keras.optimizers.Adam(rate), loss, metrics=metrics)
callbacks = []
if rule == "0.2 defaults":
    callbacks = [kg.callbacks.CapacityGrowth(
        window=10, patience=10, min_delta=0.0, min_relative_delta=0.0,
        freeze=freeze)]
elif rule == "defaults":
    callbacks = [kg.callbacks.CapacityGrowth(freeze=freeze)]
history = model.fit(*train, validation_data=val, epochs=epochs,
                    batch_size=batch, verbose=0, callbacks=callbacks)
print(json.dumps({
    "growths": [e["epoch"] for e in callbacks[0].events] if callbacks else [],
    "capacity": history.history["capacity"][-1] if callbacks else 1.0,
    "score": history.history[score][-1],
}))
"""

CONFIGS = [
    ("static", "-", "-"),
    ("0.2 defaults", "random", "freeze"),
    ("defaults", "random", "freeze"),
    ("defaults", "random", "no freeze"),
    ("defaults", "function_preserving", "freeze"),
    ("defaults", "function_preserving", "no freeze"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backend", default="jax")
    args = parser.parse_args()
    env = dict(os.environ, KERAS_BACKEND=args.backend)
    print(f"backend {args.backend}, seeds {args.seeds}; medians over seeds")
    print(
        f"{'task':<8}{'rule':<14}{'growth_init':<21}{'freeze':<11}{'score':>8}"
        f"{'capacity':>10}  growth epochs per seed"
    )
    for task, name in (("digits", "val acc"), ("sine", "val MSE")):
        for rule, growth_init, freeze in CONFIGS:
            runs = [
                json.loads(
                    subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            CHILD,
                            task,
                            rule,
                            growth_init,
                            freeze,
                            str(seed),
                        ],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                for seed in args.seeds
            ]
            scores = sorted(r["score"] for r in runs)
            capacities = sorted(r["capacity"] for r in runs)
            middle = len(runs) // 2
            print(
                f"{task:<8}{rule:<14}{growth_init:<21}{freeze:<11}"
                f"{scores[middle]:>8.4f}{capacities[middle]:>10.2f}  "
                f"{[r['growths'] for r in runs]}"
            )
        print(f"({task}: score is {name})")


if __name__ == "__main__":
    main()
