"""Does the search pick the best network of its space when nothing pulls it
towards small ones?

With no size penalty (`gamma=0`) a search over depth and width should end
at the best plain network of its space. The task is one where depth
matters: two interleaved spirals of three turns (2000 points to train on,
2000 to validate, generated), classified by MLPs of depth 1..4 whose hidden
layers keep 8, 16 or 32 units (`ConcreteWidth([8, 16, 32])` after each
`Dense(32)`, a head per block, `ConcreteDepth` over the heads).

For each seed it trains, side by side in one run:

* the plain networks of every depth at full width, `--epochs` epochs each;
* one search per `TemperatureScheduler` setting (`--settings`, each
  `warmup:logits_scale[:start]`, `default` for a default; `0:1` is the
  paper's: no warm-up, the logits at the weights' learning rate; `start`
  is the first temperature of the decay) for `--epochs`
  epochs, then `finalize`, evaluated as it comes out and after
  `--finetune` epochs of plain training; and the chosen architecture
  retrained from scratch for `--epochs` epochs, the usual last step of an
  architecture search.

It prints every seed's chosen architecture, the lowest top probability of
its layers, and the validation accuracies; then, per setting, the median
gap of the finetuned and of the retrained network to the best plain
network, how many seeds came within 1 point of it, and the collapses:
networks below every plain network.

    KERAS_BACKEND=jax python benchmarks/search_bias.py [--seeds 0 1 2 3 4]
        [--settings 0:1 default 480:10 960:default default:default:1 ...]
"""

import argparse
import os

import keras
import numpy as np

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import TemperatureScheduler

DEPTH = 4
WIDTHS = [8, 16, 32]
BATCH = 64


def spirals(n, seed, turns=3.0, noise=0.05):
    """Two interleaved spirals, classes 0 and 1."""
    rng = np.random.default_rng(seed)
    angle = np.sqrt(rng.uniform(0.05, 1.0, n)) * turns * 2 * np.pi
    label = rng.integers(0, 2, n)
    radius = angle / (turns * 2 * np.pi)
    angle = angle + np.pi * label
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x = x + rng.normal(0.0, noise, x.shape)
    return x.astype("float32"), label


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def plain(widths):
    return compile_model(
        keras.Sequential(
            [
                keras.Input((2,)),
                *[keras.layers.Dense(w, activation="relu") for w in widths],
                keras.layers.Dense(2),
            ]
        )
    )


def searched():
    inputs = keras.Input((2,))
    heads = layers.attach_heads(
        inputs,
        [
            [
                keras.layers.Dense(WIDTHS[-1], activation="relu"),
                layers.ConcreteWidth(WIDTHS),
            ]
            for _ in range(DEPTH)
        ],
        head=keras.layers.Dense(2, name="head"),
    )
    return compile_model(keras.Model(inputs, layers.ConcreteDepth()(heads)))


def hidden_widths(model):
    dense = [x for x in model.layers if isinstance(x, keras.layers.Dense)]
    return [x.units for x in dense[:-1]]


def parse(setting):
    """`warmup:logits_scale[:start]`, any part `default`, or `default`."""
    warmup, scale, start = (setting.split(":") + ["default"] * 2)[:3]
    kwargs = {}
    if warmup != "default":
        kwargs["warmup_steps"] = int(warmup)
    if scale != "default":
        kwargs["logits_scale"] = float(scale)
    if start != "default":
        kwargs["start"] = float(start)
    return kwargs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--finetune", type=int, default=20)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["0:1", "default"],
    )
    args = parser.parse_args()
    x, y = spirals(2000, seed=100)
    x_val, y_val = spirals(2000, seed=101)

    def fit(model, epochs, callbacks=()):
        model.fit(
            x,
            y,
            epochs=epochs,
            batch_size=BATCH,
            verbose=0,
            callbacks=list(callbacks),
        )
        return float(model.evaluate(x_val, y_val, verbose=0)[1])

    print(
        f"backend {keras.backend.backend()} | spirals, 3 turns | space: depth "
        f"1..{DEPTH}, widths {WIDTHS}, gamma=0 | {args.epochs} epochs, "
        f"finetune {args.finetune}"
    )
    print(
        f"{'seed':>4} {'setting':<12} {'chosen':<12} {'min top p':>9} "
        f"{'searched':>8} {'tuned':>6} {'retrained':>9} {'best plain':>10}"
    )
    rows = {setting: [] for setting in args.settings}
    for seed in args.seeds:
        accuracies = []
        for depth in range(1, DEPTH + 1):
            keras.utils.set_random_seed(seed)
            accuracies.append(fit(plain([WIDTHS[-1]] * depth), args.epochs))
        print(
            f"{seed:>4} {'plain':<12} "
            + " ".join(
                f"d{d}={a:.3f}" for d, a in enumerate(accuracies, start=1)
            )
        )
        for setting in args.settings:
            keras.utils.set_random_seed(seed)
            model = searched()
            scheduler = TemperatureScheduler(**parse(setting))
            accuracy = fit(model, args.epochs, [scheduler])
            top = min(layer.top_probability() for layer in scheduler.layers)
            final = compile_model(keras_gradnets.finalize(model))
            tuned = fit(final, args.finetune)
            widths = hidden_widths(final)
            keras.utils.set_random_seed(seed)
            retrained = fit(plain(widths), args.epochs)
            rows[setting].append(
                (tuned, retrained, max(accuracies), min(accuracies))
            )
            chosen = "-".join(map(str, widths))
            print(
                f"{seed:>4} {setting:<12} {chosen:<12} {top:>9.2f} "
                f"{accuracy:>8.3f} {tuned:>6.3f} {retrained:>9.3f} "
                f"{max(accuracies):>10.3f}"
            )
    print(
        f"{'setting':<12} {'network':<10} {'median - best plain':>20} "
        f"{'within 1 point':>15} {'collapses':>10}"
    )
    for setting, results in rows.items():
        for column, network in enumerate(["tuned", "retrained"]):
            gaps = [row[column] - row[2] for row in results]
            collapses = sum(row[column] < row[3] for row in results)
            print(
                f"{setting:<12} {network:<10} {np.median(gaps):>+20.3f} "
                f"{sum(gap >= -0.01 for gap in gaps):>13}/{len(gaps)} "
                f"{collapses:>8}/{len(gaps)}"
            )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
