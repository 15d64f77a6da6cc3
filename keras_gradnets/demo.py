"""A small GradNets comparison on generated data.

Run: python -m keras_gradnets.demo [--epochs 12] [--depth 20]

Trains four deep MLPs on three interleaved spirals (generated here, no
download): ReLU vs GReLU, and static vs gradual dropout, with the paper's
schedule g = min(epoch / tau, 1). Prints Keras's progress for each run and a
table of the final training loss, validation accuracy and g per epoch. One
seed, one run each: a demonstration of the API, not a benchmark.
"""

import argparse
import time

import keras
import numpy as np

from keras_gradnets.callbacks import GradNetScheduler
from keras_gradnets.layers import GradualDropout
from keras_gradnets.layers import GReLU


def spirals(n_per_class=700, classes=3, noise=0.25, seed=0):
    """Returns `(x, y)`: points on `classes` interleaved spiral arms."""
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.2, 1.0, n_per_class), classes)
    label = np.repeat(np.arange(classes), n_per_class)
    angle = 4.0 * radius + 2 * np.pi * label / classes
    angle = angle + rng.normal(scale=noise, size=angle.shape)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    order = rng.permutation(len(x))
    return x[order].astype("float32"), label[order]


def deep_mlp(depth, width, activation, dropout=None):
    layers = [keras.Input((2,))]
    for _ in range(depth):
        layers += [keras.layers.Dense(width), activation()]
        if dropout is not None:
            layers.append(dropout())
    layers.append(keras.layers.Dense(3, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.Adam(1e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--tau", type=float, default=5)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    x, y = spirals()
    runs = {
        "ReLU": (keras.layers.ReLU, None),
        "GReLU": (GReLU, None),
        "ReLU + Dropout(0.5)": (
            keras.layers.ReLU,
            lambda: keras.layers.Dropout(0.5),
        ),
        "ReLU + GradualDropout(0.5)": (
            keras.layers.ReLU,
            lambda: GradualDropout(0.5),
        ),
    }
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}: "
        f"{args.depth}-layer MLPs of width {args.width} on 3 spirals "
        f"({len(x)} points, 20% held out), tau={args.tau} epochs."
    )
    rows = []
    for name, (activation, dropout) in runs.items():
        print(f"\n== {name}")
        keras.utils.set_random_seed(1)
        model = deep_mlp(args.depth, args.width, activation, dropout)
        gradual = name.startswith("GReLU") or "Gradual" in name
        callbacks = [GradNetScheduler(tau=args.tau)] if gradual else []
        start = time.perf_counter()
        history = model.fit(
            x,
            y,
            validation_split=0.2,
            epochs=args.epochs,
            batch_size=64,
            callbacks=callbacks,
            verbose=2,
        ).history
        rows.append(
            (
                name,
                history["loss"][-1],
                history["val_accuracy"][-1],
                max(history["val_accuracy"]),
                time.perf_counter() - start,
                history.get("g"),
            )
        )

    print(f"\n{'model':<28} {'loss':>7} {'val acc':>8} {'best':>6} {'time':>6}")
    for name, loss, acc, best, seconds, _ in rows:
        print(
            f"{name:<28} {loss:>7.4f} {acc:>8.3f} {best:>6.3f} {seconds:>5.1f}s"
        )
    g = next(row[5] for row in rows if row[5] is not None)
    print("\ng per epoch (gradual runs):", " ".join(f"{v:.2f}" for v in g))


if __name__ == "__main__":
    main()
