"""Depth stacking and feed-forward width growth on a character-level
language model, against training the deep model from scratch.

Text: the standard library's own source files (no download), read as
bytes; the last 10% of the text is the validation set. Model: a byte
embedding with learned positions, causal keras-hub `TransformerDecoder`
blocks (width 64, 4 heads, feed-forward 128), a softmax over the 256
bytes; Adam 1e-3, batch 32, windows of 64 bytes.

* `deep`: 4 blocks, trained from scratch for the whole run.
* `top`, `middle`: `DynamicStack(depth=4, initial_depth=2,
  placement=..., blocks_per_growth=2)`, grown to 4 blocks at once by
  `CapacityGrowth(grow_at=[f])`:
  `top` is G_stack (the trained blocks copied on top), `middle` is MIDAS
  (the middle block copied after itself); new blocks enter through gates
  at `--grown-gate` (0 keeps the function at the growth, 1 is plain
  stacking) and, with `--ramp-steps n`, on a ramp from 0 to 1 over their
  first n steps (the function is kept at the growth whatever the gate).
* `ffn`: the deep model's 4 blocks, each wrapped in
  `DynamicFeedForward(chunks=4)`: feed-forward width 32 at the start,
  one chunk more (function kept) at each of the `--width-grow-at`
  fractions of the run, 128 at the end, as the deep model.
* `width`: as `ffn`, and the heads grow too (`DynamicAttentionHeads(
  chunks=4)` inside): 1 head of 4 at the start, one more at each growth.

It prints, per seed and as medians, the final validation loss of each,
and the training compute (parameters in use x tokens, summed over the
epochs) at which each grown model first comes within 2% of the deep
model's final validation loss, as a fraction of the deep model's
compute; "never" if it does not within the run. The compute is read at
epoch ends (growth fractions are rounded to whole epochs, as
`CapacityGrowth` rounds them), so the fraction is an upper bound, to
within one epoch's compute. Then, per run, the medians of its whole-run
compute and of its `fit` wall time over the deep model's.

    python benchmarks/depth_stacking.py [--seeds 0 1 2] [--epochs 12]
        [--steps 100] [--grow-at 0.5] [--runs top middle ffn width]
        [--grown-gate 0] [--ramp-steps 0] [--width-grow-at 0.1 0.2 0.3]
        [--backend jax]
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, sysconfig, time
import keras, keras_hub, numpy as np
import keras_gradnets as kg

kind, seed, epochs, steps, grow_at, grown_gate, ramp_steps = sys.argv[1:8]
width_grow_at = [float(f) for f in sys.argv[8].split(",")]
seed, epochs, steps = int(seed), int(epochs), int(steps)
ramp_steps = int(ramp_steps)
grow_at, grown_gate = float(grow_at), float(grown_gate)
names = ["argparse.py", "functools.py", "inspect.py", "typing.py",
         "dataclasses.py", "pathlib.py", "tarfile.py", "textwrap.py"]
root = sysconfig.get_paths()["stdlib"]
text = b"".join(open(os.path.join(root, n), "rb").read() for n in names)
data = np.frombuffer(text, dtype="uint8").astype("int32")
cut = int(0.9 * len(data))
length, batch = 64, 32
rng = np.random.default_rng(0)

def windows(part, count):
    starts = rng.integers(0, len(part) - length - 1, size=count)
    idx = starts[:, None] + np.arange(length + 1)
    return part[idx[:, :-1]], part[idx[:, 1:]]

train = windows(data[:cut], steps * batch)
val = windows(data[cut:], 2048)

keras.utils.set_random_seed(seed)
block = keras_hub.layers.TransformerDecoder(intermediate_dim=128, num_heads=4)
inputs = keras.Input((length,), dtype="int32")
h = keras_hub.layers.TokenAndPositionEmbedding(256, length, 64)(inputs)
heads = []
if kind in ("ffn", "width"):
    stack = None
    wrappers = []
    for _ in range(4):
        inner = block.from_config(block.get_config())
        if kind == "width":
            heads.append(kg.layers.DynamicAttentionHeads(inner, chunks=4))
            inner = heads[-1]
        wrappers.append(kg.layers.DynamicFeedForward(inner, chunks=4))
        h = wrappers[-1](h)
    callbacks = [kg.callbacks.CapacityGrowth(grow_at=width_grow_at)]
elif kind == "deep":
    stack = kg.layers.DynamicStack(block, depth=4, initial_depth=4)
    callbacks = []
else:
    stack = kg.layers.DynamicStack(
        block, depth=4, initial_depth=2, placement=kind, blocks_per_growth=2,
        grown_gate=grown_gate, ramp_steps=ramp_steps)
    callbacks = [kg.callbacks.CapacityGrowth(grow_at=[grow_at])]
h = h if stack is None else stack(h)
outputs = keras.layers.Dense(256)(keras.layers.LayerNormalization()(h))
model = keras.Model(inputs, outputs)
model.compile(keras.optimizers.Adam(1e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
compute = []

def params_in_use():
    if stack is not None:
        per_block = sum(
            int(np.prod(v.shape)) for v in stack.blocks[0].trainable_weights)
        return (model.count_params()
                - (stack.depth - stack.active_blocks) * per_block)
    # Each inactive feed-forward unit holds a column of the intermediate
    # kernel, a bias and a row of the output kernel; each inactive head of
    # size 16 its query, key and value columns and biases and its output
    # rows.
    units = sum(128 - w.intermediate_dense.active_units for w in wrappers)
    head_params = 3 * (64 * 16 + 16) + 16 * 64
    held = units * (64 + 1 + 64) + sum(
        (4 - x.active_heads) * head_params for x in heads)
    return model.count_params() - held

class Compute(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        compute.append(params_in_use() * steps * batch * length)

start = time.perf_counter()
history = model.fit(*train, validation_data=val, batch_size=batch,
                    epochs=epochs, verbose=0, callbacks=[*callbacks, Compute()])
seconds = time.perf_counter() - start
assert params_in_use() == model.count_params()  # grown to the deep model
print(json.dumps({"val_loss": history.history["val_loss"],
                  "compute": np.cumsum(compute).tolist(),
                  "seconds": seconds}))
"""


def train(
    kind,
    seed,
    backend="jax",
    epochs=12,
    steps=100,
    grow_at=0.5,
    grown_gate=0.0,
    ramp_steps=0,
    width_grow_at=(0.1, 0.2, 0.3),
):
    """Trains one model (`deep`, `top`, `middle`, `ffn` or `width`) in its
    own process; returns its validation losses and cumulative compute at
    each epoch end, and its `fit` wall time in seconds."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            kind,
            str(seed),
            str(epochs),
            str(steps),
            str(grow_at),
            str(grown_gate),
            str(ramp_steps),
            ",".join(map(str, width_grow_at)),
        ],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compute_to_reach(compute, scores, reached, total):
    """The compute at which `scores` first satisfied `reached`, as a
    fraction of `total`; None if they never did.

    Args:
        compute: The cumulative training compute at each evaluation.
        scores: The validation score at each evaluation.
        reached: A function of a score, True once it is good enough.
        total: The compute to divide by (the twin's whole run).
    """
    for spent, score in zip(compute, scores, strict=True):
        if reached(score):
            return spent / total
    return None


def compute_to_within_2_percent(grown, deep):
    """The compute at which `grown` first came within 2% of `deep`'s final
    validation loss, as a fraction of `deep`'s total; None if it never
    did. Both are what `train` returns."""
    target = 1.02 * deep["val_loss"][-1]
    return compute_to_reach(
        grown["compute"],
        grown["val_loss"],
        lambda loss: loss <= target,
        deep["compute"][-1],
    )


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--grow-at", type=float, default=0.5)
    parser.add_argument(
        "--runs",
        "--placements",
        nargs="+",
        default=["top", "middle"],
        choices=["top", "middle", "ffn", "width"],
    )
    parser.add_argument("--grown-gate", type=float, default=0.0)
    parser.add_argument("--ramp-steps", type=int, default=0)
    parser.add_argument(
        "--width-grow-at", type=float, nargs=3, default=[0.1, 0.2, 0.3]
    )
    parser.add_argument("--backend", default="jax")
    args = parser.parse_args()

    def run(kind, seed):
        return train(
            kind,
            seed,
            backend=args.backend,
            epochs=args.epochs,
            steps=args.steps,
            grow_at=args.grow_at,
            grown_gate=args.grown_gate,
            ramp_steps=args.ramp_steps,
            width_grow_at=args.width_grow_at,
        )

    placements = args.runs
    print(
        f"backend {args.backend}, seeds {args.seeds}, {args.epochs} epochs "
        f"of {args.steps} steps, growth at {args.grow_at} of the run, "
        f"grown gates start at {args.grown_gate}, "
        f"ramp over {args.ramp_steps} steps; width grows at "
        f"{args.width_grow_at} of the run; "
        "final validation loss, and compute to within 2% of deep's"
    )
    print(
        f"{'seed':<6}{'deep':>10}"
        + "".join(f"{p:>10}{'compute':>10}" for p in placements)
    )
    finals, fractions, totals = [], [], []
    for seed in args.seeds:
        deep = run("deep", seed)
        row, final, fraction = f"{seed:<6}{deep['val_loss'][-1]:>10.4f}", [], []
        runs = []
        for placement in placements:
            stacked = run(placement, seed)
            runs.append(stacked)
            fraction.append(compute_to_within_2_percent(stacked, deep))
            final.append(stacked["val_loss"][-1])
            row += f"{final[-1]:>10.4f}" + (
                f"{'never':>10}"
                if fraction[-1] is None
                else f"{fraction[-1]:>10.3f}"
            )
        totals.append(
            [
                (
                    run_["compute"][-1] / deep["compute"][-1],
                    run_["seconds"] / deep["seconds"],
                )
                for run_ in runs
            ]
        )
        finals.append([deep["val_loss"][-1], *final])
        fractions.append(fraction)
        print(row)
    medians = np.median(finals, axis=0)
    row = f"{'median':<6}{medians[0]:>10.4f}"
    for i, _ in enumerate(placements):
        reached = [f[i] for f in fractions if f[i] is not None]
        row += f"{medians[i + 1]:>10.4f}{len(reached):>6}/{len(fractions)}"
        row += f" ({np.median(reached):.3f})" if reached else ""
    print(row)
    print("compute column of the median row: seeds that reached (median)")
    for i, placement in enumerate(placements):
        compute, seconds = np.median([t[i] for t in totals], axis=0)
        print(
            f"{placement}: whole-run compute {compute:.3f} and wall time "
            f"{seconds:.3f} of the deep model's (medians)"
        )


if __name__ == "__main__":
    main()
