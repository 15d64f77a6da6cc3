"""How should new units start? `growth_init` side by side.

Dynamic networks grow on a fixed budget (`CapacityGrowth(grow_at=[0.2,
0.4, 0.6, 0.8])`, from one chunk of five to all five, no freezing), so
that only the initialization of the new units differs:

* `function_preserving`: new units' incoming weights drawn, outgoing
  weights zero (the default);
* `gradmax`: incoming weights zero, outgoing weights from the top singular
  vectors of the gradient correlation on 256 training examples (Evci et
  al. 2022);
* `random`: both drawn (the function changes at a growth);

beside the static full-width network. Every network uses `tanh` (GradMax
needs a nonzero slope at 0). Tasks:

* `digits`: `sklearn.datasets.load_digits` (1200 train / 597 validation),
  two `DynamicDense(100, chunks=5)` layers, Adam 1e-3, batch 32, 60
  epochs; score: validation accuracy.
* `sine`: notebook 02's task, `sin(x)` on 1000 points in [-2pi, 2pi], one
  `DynamicDense(500, chunks=5)`, Adam 1e-2, batch 50, 150 epochs; score:
  validation MSE on shifted points.

It prints, per task and initialization, the medians over seeds of the
final validation score and of the training loss at the end of the epoch
after each growth, and the score per seed.

    python benchmarks/gradmax.py [--seeds 0 1 2] [--backend jax]
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

task, growth_init, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
if task == "digits":
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    train, val = (x[:1200], y[:1200]), (x[1200:], y[1200:])
    epochs, batch, rate, units, depth = 60, 32, 1e-3, 100, 2
    head = keras.layers.Dense(10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics, score, inputs = ["accuracy"], "val_accuracy", (64,)
else:
    x = np.linspace(-2 * np.pi, 2 * np.pi, 1000, dtype="float32")[:, None]
    shifted = x + (x[1, 0] - x[0, 0]) / 2
    train, val = (x, np.sin(x)), (shifted, np.sin(shifted))
    epochs, batch, rate, units, depth = 150, 50, 1e-2, 500, 1
    head, loss, metrics, score, inputs = keras.layers.Dense(1), "mse", [], \
        "val_loss", (1,)

keras.utils.set_random_seed(seed)
if growth_init == "static":
    hidden = [keras.layers.Dense(units, activation="tanh")
              for _ in range(depth)]
    callbacks = []
else:
    hidden = [kg.layers.DynamicDense(units, chunks=5, activation="tanh",
                                     growth_init=growth_init)
              for _ in range(depth)]
    sample = np.random.default_rng(seed).permutation(len(train[0]))[:256]
    callbacks = [kg.callbacks.CapacityGrowth(
        grow_at=[0.2, 0.4, 0.6, 0.8],
        data=(train[0][sample], train[1][sample]))]
model = keras.Sequential([keras.Input(inputs), *hidden, head])
model.compile(keras.optimizers.Adam(rate), loss, metrics=metrics)
history = model.fit(*train, validation_data=val, epochs=epochs,
                    batch_size=batch, verbose=0, callbacks=callbacks)
grown = [e["epoch"] for e in callbacks[0].events] if callbacks else []
print(json.dumps({
    "score": history.history[score][-1],
    "after": [history.history["loss"][e + 1] for e in grown],
}))
"""

INITS = ["static", "function_preserving", "gradmax", "random"]


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backend", default="jax")
    args = parser.parse_args()
    env = dict(os.environ, KERAS_BACKEND=args.backend)

    def run(task, growth_init, seed):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, task, growth_init, str(seed)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"backend {args.backend}, seeds {args.seeds}; medians over seeds")
    print(
        f"{'task':<8}{'growth_init':<21}{'score':>8}  "
        "training loss the epoch after each growth; score per seed"
    )
    for task, name in (("digits", "val accuracy"), ("sine", "val MSE")):
        for growth_init in INITS:
            runs = [run(task, growth_init, seed) for seed in args.seeds]
            score = np.median([r["score"] for r in runs])
            after = (
                np.median([r["after"] for r in runs], axis=0).round(4)
                if runs[0]["after"]
                else "-"
            )
            print(
                f"{task:<8}{growth_init:<21}{score:>8.4f}  {after}; "
                f"{[round(r['score'], 4) for r in runs]}"
            )
        print(f"({task}: score is {name})")


if __name__ == "__main__":
    main()
