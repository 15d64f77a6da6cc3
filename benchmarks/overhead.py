"""Overhead of keras_gradnets layers and callbacks, as measured ratios.

Run: python benchmarks/overhead.py [--backends tensorflow jax torch]
    [--rounds 15] [--only LABEL] [--jit-compile]

For each backend (in its own process) every variant trains the same MLP
(6 x Dense(256), batch 128, 50 steps an epoch) for one epoch per round (or
predicts the same data, for inference); the
variants of a comparison run alternately in each round, and the printed
ratio is the median over rounds of (variant time / baseline time). Fit-time
ratios on a small, shared machine move by several percent from run to run.
With `--jit-compile` every model compiles with `jit_compile=True` (XLA on
TensorFlow, `torch.compile` on torch) instead of the backend's default.
"""

import argparse
import json
import os
import subprocess
import sys
import time

PAIRS = [
    ("GReLU / LeakyReLU", "grelu", "leaky_relu", 1.03),
    ("GradualDropout / Dropout", "gradual_dropout", "dropout", 1.05),
    ("fit + GradNetScheduler(epoch) / fit", "scheduler_epoch", "grelu", 1.05),
    ("fit + GradNetScheduler(step) / fit", "scheduler_step", "grelu", 1.05),
    ("MollifiedDense / Dense+sigmoid, train", "mollified", "sigmoid", 1.5),
    # Where the MollifiedDense cost goes: the sigmoid plus one uniform draw
    # per unit (what any per-unit random layer pays), and the rest.
    (
        "Dense+sigmoid+draw / Dense+sigmoid, train",
        "sigmoid_draw",
        "sigmoid",
        None,
    ),
    (
        "MollifiedDense / Dense+sigmoid+draw, train",
        "mollified",
        "sigmoid_draw",
        None,
    ),
    ("DropIn / Dropout, same rate, train", "dropin", "dropout_skip", 1.10),
    (
        "MollifiedDense / Dense+sigmoid, infer",
        "mollified_p0",
        "sigmoid_predict",
        1.05,
    ),
]


def worker(rounds, only, jit_compile):
    import keras
    import numpy as np

    import keras_gradnets as kg
    from keras_gradnets.core.noise import uniform

    def mlp(activation, dropout=None, dense=None):
        layers = [keras.Input((256,))]
        for _ in range(6):
            if dense is None:
                layers += [keras.layers.Dense(256), activation()]
            else:
                layers.append(dense())
            if dropout is not None:
                layers.append(dropout())
        layers.append(keras.layers.Dense(10))
        model = keras.Sequential(layers)
        model.compile(
            keras.optimizers.SGD(0.01), "mse", jit_compile=jit_compile
        )
        return model

    def mixed_mlp(mix):
        """6 x (Dense(256) + ReLU), each output mixed with its input."""
        inputs = keras.Input((256,))
        h = inputs
        for _ in range(6):
            new = keras.layers.Dense(256, activation="relu")(h)
            h = mix(h, new)
        model = keras.Model(inputs, keras.layers.Dense(10)(h))
        model.compile(
            keras.optimizers.SGD(0.01), "mse", jit_compile=jit_compile
        )
        return model

    class SigmoidAndDraw(keras.layers.Layer):
        """A sigmoid plus, in training, one uniform draw per unit (scaled
        to nothing): the draw a mollified unit makes, without the rest."""

        def __init__(self):
            super().__init__()
            self.seed_generator = keras.random.SeedGenerator()

        def call(self, x, training=None):
            y = keras.activations.sigmoid(x)
            if training:
                draw = uniform(keras.ops.shape(x), self.seed_generator)
                y = y + 1e-9 * draw
            return y

    grelu_model = mlp(lambda: kg.layers.GReLU(g=0.5))
    sigmoid_model = mlp(lambda: keras.layers.Activation("sigmoid"))
    mollified_model = mlp(
        None, dense=lambda: kg.layers.MollifiedDense(256, p=0.5)
    )
    mollified_p0_model = mlp(
        None, dense=lambda: kg.layers.MollifiedDense(256, p=0.0)
    )
    variants = {
        "leaky_relu": (mlp(lambda: keras.layers.LeakyReLU(0.5)), []),
        "grelu": (grelu_model, []),
        "dropout": (
            mlp(keras.layers.ReLU, lambda: keras.layers.Dropout(0.5)),
            [],
        ),
        "gradual_dropout": (
            mlp(
                keras.layers.ReLU,
                lambda: kg.layers.GradualDropout(0.5, g=1.0),
            ),
            [],
        ),
        # Schedules that never finish, so g is written every epoch / step.
        "scheduler_epoch": (
            grelu_model,
            [kg.callbacks.GradNetScheduler(tau=10**6)],
        ),
        "scheduler_step": (
            grelu_model,
            [kg.callbacks.GradNetScheduler(tau=10**9, unit="step")],
        ),
        "sigmoid": (sigmoid_model, []),
        "sigmoid_draw": (mlp(SigmoidAndDraw), []),
        "dropout_skip": (
            mixed_mlp(lambda h, new: keras.layers.Dropout(0.5)(new)),
            [],
        ),
        "dropin": (
            mixed_mlp(
                lambda h, new: kg.layers.DropIn("regularizing", rate=0.5)(
                    [h, new]
                )
            ),
            [],
        ),
        "mollified": (mollified_model, []),
    }
    # Inference after annealing (p=0): predict time, not fit time.
    predicting = {
        "mollified_p0": mollified_p0_model,
        "sigmoid_predict": sigmoid_model,
    }
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128 * 50, 256)).astype("float32")
    y = rng.normal(size=(128 * 50, 10)).astype("float32")

    def run(name):
        start = time.perf_counter()
        if name in predicting:
            predicting[name].predict(x, batch_size=128, verbose=0)
        else:
            model, callbacks = variants[name]
            model.fit(
                x, y, batch_size=128, epochs=1, verbose=0, callbacks=callbacks
            )
        return time.perf_counter() - start

    # TensorFlow takes a few epochs to settle after tracing.
    for _ in range(3):
        for name in [*variants, *predicting]:
            run(name)
    results = []
    for label, variant, baseline, target in PAIRS:
        if only and only not in label:
            continue
        ratios = []
        for r in range(rounds):
            order = (variant, baseline) if r % 2 else (baseline, variant)
            times = {name: run(name) for name in order}
            ratios.append(times[variant] / times[baseline])
        results.append(
            {
                "label": label,
                "ratio": float(np.median(ratios)),
                "spread": [float(np.min(ratios)), float(np.max(ratios))],
                "target": target,
            }
        )
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"]
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--only", default="", help="run the comparisons whose label has this"
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile every model with jit_compile=True",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.rounds, args.only, args.jit_compile or "auto")
        return
    print(
        f"{'backend':<11} {'comparison':<42} {'ratio':>6} "
        f"{'min-max':>13} {'target':>7}"
    )
    for backend in args.backends:
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--rounds",
                    str(args.rounds),
                    "--only",
                    args.only,
                    *(["--jit-compile"] if args.jit_compile else []),
                ],
                env={**os.environ, "KERAS_BACKEND": backend},
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for row in json.loads(out):
            low, high = row["spread"]
            target = "-" if row["target"] is None else f"<={row['target']}"
            print(
                f"{backend:<11} {row['label']:<42} {row['ratio']:>6.3f} "
                f"{low:>6.3f}-{high:<6.3f} {target:>7}"
            )


if __name__ == "__main__":
    main()
