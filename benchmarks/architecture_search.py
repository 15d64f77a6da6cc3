"""One architecture-search run of keras_gradnets against keras-tuner.

Searches the same space two ways on `load_digits` (an MLP of depth 1..3,
each hidden layer 8, 16, 32 or 64 units wide: 84 architectures):

* keras-tuner `RandomSearch`, `--trials` models trained from scratch for
  `--epochs` epochs each, as a user would run it;
* keras-tuner `Hyperband` with `max_epochs=--epochs` (its default
  `factor=3`, one iteration), as a user would run it;
* one `fit` of keras_gradnets' joint depth and width model (Grathwohl et
  al.: a `ConcreteDepth` over a head per block, a `ConcreteWidth` per
  hidden layer, `TemperatureScheduler()`'s defaults) for the same
  `--epochs`, then `finalize` to the chosen plain network, evaluated as it
  comes out, after `--finetune` more epochs of plain training, and
  retrained from scratch for `--epochs` epochs (timed without the
  finetuning).

It prints, per method, the chosen architecture, its validation accuracy,
its parameter count and the total wall time, side by side in one run.

    pip install keras-tuner   # the `benchmarks` extra
    KERAS_BACKEND=jax python benchmarks/architecture_search.py [--trials 20]
    KERAS_BACKEND=jax python benchmarks/architecture_search.py \\
        --collapse-seeds 0 1 2 3 4
"""

import argparse
import os
import tempfile
import time

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_gradnets
from keras_gradnets import layers
from keras_gradnets.callbacks import TemperatureScheduler

DEPTH = 3
WIDTHS = [8, 16, 32, 64]
BATCH = 64


def data():
    digits = load_digits()
    x = (digits.data / 16).astype("float32")
    return train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )


def compile_model(model, learning_rate=3e-3):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def plain_mlp(widths):
    return compile_model(
        keras.Sequential(
            [
                keras.Input((64,)),
                *[keras.layers.Dense(w, activation="relu") for w in widths],
                keras.layers.Dense(10),
            ]
        )
    )


def describe(model):
    dense = [x for x in model.layers if isinstance(x, keras.layers.Dense)]
    return "-".join(str(x.units) for x in dense[:-1])


def keras_tuner_search(tuner_name, x, y, x_val, y_val, trials, epochs, seed):
    import keras_tuner

    def build(hp):
        depth = hp.Int("depth", 1, DEPTH)
        return plain_mlp(
            [hp.Choice(f"width_{i}", WIDTHS) for i in range(depth)]
        )

    if tuner_name == "RandomSearch":
        budget = {"max_trials": trials}
    else:
        budget = {"max_epochs": epochs}
    with tempfile.TemporaryDirectory() as directory:
        tuner = getattr(keras_tuner, tuner_name)(
            build,
            objective="val_accuracy",
            seed=seed,
            directory=directory,
            project_name="digits",
            overwrite=True,
            **budget,
        )
        start = time.perf_counter()
        tuner.search(
            x,
            y,
            validation_data=(x_val, y_val),
            epochs=epochs,
            batch_size=BATCH,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        best = tuner.get_best_models(1)[0]
    accuracy = best.evaluate(x_val, y_val, verbose=0)[1]
    return describe(best), accuracy, best.count_params(), seconds


def concrete_search(x, y, x_val, y_val, epochs, finetune, gamma, seed):
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    inputs = keras.Input((64,))
    heads = layers.attach_heads(
        inputs,
        [
            [
                keras.layers.Dense(WIDTHS[-1], activation="relu"),
                layers.ConcreteWidth(WIDTHS, gamma=gamma[1]),
            ]
            for _ in range(DEPTH)
        ],
        head=keras.layers.Dense(10, name="head"),
    )
    outputs = layers.ConcreteDepth(gamma=gamma[0])(heads)
    model = compile_model(keras.Model(inputs, outputs))
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=BATCH,
        verbose=0,
        callbacks=[TemperatureScheduler()],
    )
    plain = compile_model(keras_gradnets.finalize(model))
    searched = time.perf_counter() - start
    accuracy = plain.evaluate(x_val, y_val, verbose=0)[1]
    plain.fit(x, y, epochs=finetune, batch_size=BATCH, verbose=0)
    tuned_seconds = time.perf_counter() - start
    tuned = plain.evaluate(x_val, y_val, verbose=0)[1]
    # The usual last step of an architecture search: the chosen network
    # trained from scratch, as long as every keras-tuner trial.
    fresh = compile_model(keras.models.clone_model(plain))
    fresh.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0)
    retrained_seconds = time.perf_counter() - start - (tuned_seconds - searched)
    return {
        "chosen": describe(plain),
        "params": plain.count_params(),
        "search params": model.count_params(),
        "rows": [
            ("keras_gradnets, one fit, finalized", accuracy, searched),
            (
                f"  + {finetune} epochs of the finalized model",
                tuned,
                tuned_seconds,
            ),
            (
                f"  or retrained from scratch, {epochs} epochs",
                fresh.evaluate(x_val, y_val, verbose=0)[1],
                retrained_seconds,
            ),
        ],
    }


def collapse_count(x, y, x_val, y_val, args):
    """The joint search over `--collapse-seeds`, against the narrowest
    plain candidates of the space (one, two and three layers of the
    narrowest width), trained for the same epochs with the same seed. A
    search *collapses* when its finalized network, as it comes out, scores
    below every one of them."""
    narrowest = [[WIDTHS[0]] * depth for depth in range(1, DEPTH + 1)]
    print(
        f"{'seed':>4} {'chosen':>9} {'params':>7} {'finalized':>9} "
        f"{'+finetune':>9} {'retrained':>9} {'narrowest plain':>16}"
    )
    collapsed = 0
    for seed in args.collapse_seeds:
        ours = concrete_search(
            x,
            y,
            x_val,
            y_val,
            args.epochs,
            args.finetune,
            (args.depth_gamma, args.width_gamma),
            seed,
        )
        plain = []
        for widths in narrowest:
            keras.utils.set_random_seed(seed)
            model = plain_mlp(widths)
            model.fit(x, y, epochs=args.epochs, batch_size=BATCH, verbose=0)
            plain.append(model.evaluate(x_val, y_val, verbose=0)[1])
        accuracies = [row[1] for row in ours["rows"]]
        collapsed += accuracies[0] < min(plain)
        print(
            f"{seed:>4} {ours['chosen']:>9} {ours['params']:>7} "
            + " ".join(f"{a:>9.4f}" for a in accuracies)
            + f" {'/'.join(f'{a:.3f}' for a in plain):>16}"
        )
    print(
        f"collapsed (finalized below every narrowest plain network): "
        f"{collapsed} of {len(args.collapse_seeds)} seeds"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune", type=int, default=10)
    parser.add_argument("--depth-gamma", type=float, default=1e-2)
    parser.add_argument("--width-gamma", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--collapse-seeds",
        type=int,
        nargs="+",
        help="instead of the comparison, count collapsed searches over "
        "these seeds",
    )
    args = parser.parse_args()
    x, x_val, y, y_val = data()
    print(
        f"backend {keras.backend.backend()} | load_digits {len(x)} train, "
        f"{len(x_val)} validation | space: depth 1..{DEPTH}, widths "
        f"{WIDTHS} ({sum(len(WIDTHS) ** d for d in range(1, DEPTH + 1))} "
        f"architectures) | {args.epochs} epochs per model"
    )
    if args.collapse_seeds:
        collapse_count(x, y, x_val, y_val, args)
        return
    ours = concrete_search(
        x,
        y,
        x_val,
        y_val,
        args.epochs,
        args.finetune,
        (args.depth_gamma, args.width_gamma),
        args.seed,
    )
    tuners = {}
    for name in ("RandomSearch", "Hyperband"):
        keras.utils.set_random_seed(args.seed)
        tuners[name] = keras_tuner_search(
            name, x, y, x_val, y_val, args.trials, args.epochs, args.seed
        )
    print(
        f"{'method':<44} {'chosen':>9} {'val acc':>8} {'params':>7} "
        f"{'wall s':>7}"
    )
    for name, (chosen, accuracy, count, wall) in tuners.items():
        label = f"keras-tuner {name}" + (
            f", {args.trials} trials" if name == "RandomSearch" else ""
        )
        print(
            f"{label:<44} {chosen:>9} {accuracy:>8.4f} {count:>7} {wall:>7.1f}"
        )
    for label, accuracy, wall in ours["rows"]:
        print(
            f"{label:<44} {ours['chosen']:>9} {accuracy:>8.4f} "
            f"{ours['params']:>7} {wall:>7.1f}"
        )
    for label, _, wall in ours["rows"][1:]:
        ratios = ", ".join(
            f"{name} {result[3] / wall:.1f}" for name, result in tuners.items()
        )
        print(f"wall time keras-tuner / ({label.strip()}): {ratios}")
    print(f"search model {ours['search params']} params")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
