"""Train-step time of a wide dynamic MLP at 10% and 20% active capacity.

Prints, per backend, the time of one training step at 10% and 20% active
capacity divided by the time at full capacity (4 DynamicDense layers of
2048 units, batch 128, Adam), and the time at full capacity divided by the
time of the same MLP built from plain Dense layers, with the smallest and
largest round of that last ratio: each ratio is the median over rounds
that time every model once, in an order reversed every other round. Then
the number of train-function traces over a run with 4 growth events.

    python benchmarks/capacity.py [--backends tensorflow jax torch]
        [--rounds 5]
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import keras, numpy as np
from keras_gradnets.callbacks import CapacityGrowth
from keras_gradnets.layers import DynamicDense, link_dynamic_layers

WIDTH, DEPTH, BATCH, STEPS = 2048, 4, 128, 8
ROUNDS = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.normal(size=(BATCH * STEPS, 256)).astype("float32")
y = rng.integers(0, 10, size=BATCH * STEPS)

def model(plain=False):
    if plain:
        hidden = [keras.layers.Dense(WIDTH, activation="relu")
                  for _ in range(DEPTH)]
    else:
        hidden = [DynamicDense(WIDTH, chunks=10, activation="relu")
                  for _ in range(DEPTH)]
    m = keras.Sequential([keras.Input((256,)), *hidden, keras.layers.Dense(10)])
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    if not plain:
        link_dynamic_layers(m)
    return m, hidden

models = {}
for fraction in (0.1, 0.2, 1.0):
    m, hidden = model()
    for layer in hidden:
        layer.set_capacity(layer.bounds[round(10 * fraction)])
    m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # trace
    models[fraction] = m
m, _ = model(plain=True)
m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
models["dense"] = m

times = {f: [] for f in models}
for r in range(ROUNDS):
    for f in list(models)[:: -1 if r % 2 else 1]:
        start = time.perf_counter()
        models[f].fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        times[f].append((time.perf_counter() - start) / STEPS)
times = {f: np.array(t) for f, t in times.items()}
full_vs_dense = times[1.0] / times["dense"]

class Counter(DynamicDense):
    traces = 0
    def call(self, inputs, training=None):
        if training:
            Counter.traces += 1
        return super().call(inputs, training=training)

m = keras.Sequential([keras.Input((256,)), Counter(512, chunks=5),
                      keras.layers.Dense(10)])
m.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    from_logits=True))
growth = CapacityGrowth(unit="step", window=1, patience=0, min_delta=1e9)
m.fit(x, y, batch_size=BATCH // 2, epochs=1, verbose=0, callbacks=[growth])
print(json.dumps({
    "step_s_full": float(np.median(times[1.0])),
    "ratio_10": float(np.median(times[0.1] / times[1.0])),
    "ratio_20": float(np.median(times[0.2] / times[1.0])),
    "full_vs_dense": float(np.median(full_vs_dense)),
    "full_vs_dense_spread": [float(full_vs_dense.min()),
                             float(full_vs_dense.max())],
    "growths": len(growth.events),
    "traces": Counter.traces,
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"]
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        "backend     full step (s)  10%/full [<=0.2]  20%/full [<=0.35]  "
        "full/Dense [<=1.05]       min-max  traces over growths [1+4]"
    )
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.rounds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(result.stdout.strip().splitlines()[-1])
        traces = "eager" if backend == "torch" else r["traces"]
        low, high = r["full_vs_dense_spread"]
        print(
            f"{backend:<11} {r['step_s_full']:>13.3f}  {r['ratio_10']:>16.3f}"
            f"  {r['ratio_20']:>17.3f}  {r['full_vs_dense']:>19.3f}"
            f"  {low:>5.3f}-{high:<5.3f}  {traces} over {r['growths']}"
        )


if __name__ == "__main__":
    main()
