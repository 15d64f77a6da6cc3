"""Train-step time of a wide dynamic MLP at 10% and 20% active capacity.

Prints, per backend, the median time of one training step at 10% and 20%
active capacity divided by the time at full capacity (4 DynamicDense
layers of 2048 units, batch 128, Adam), the time at full capacity divided
by the time of the same MLP built from plain Dense layers, all measured
side by side in one run (alternating rounds), and the number of
train-function traces over a run with 4 growth events.

    python benchmarks/capacity.py [--backends tensorflow jax torch]
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

WIDTH, DEPTH, BATCH, STEPS, ROUNDS = 2048, 4, 128, 8, 5
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
for _ in range(ROUNDS):
    for f, m in models.items():
        start = time.perf_counter()
        m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        times[f].append((time.perf_counter() - start) / STEPS)
median = {f: float(np.median(t)) for f, t in times.items()}

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
    "step_s_full": median[1.0],
    "ratio_10": median[0.1] / median[1.0],
    "ratio_20": median[0.2] / median[1.0],
    "full_vs_dense": median[1.0] / median["dense"],
    "growths": len(growth.events),
    "traces": Counter.traces,
}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"]
    )
    args = parser.parse_args()
    print(
        "backend     full step (s)  10%/full [<=0.2]  20%/full [<=0.35]  "
        "full/Dense  traces over growths [1+4]"
    )
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        result = subprocess.run(
            [sys.executable, "-c", CHILD],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(result.stdout.strip().splitlines()[-1])
        traces = "eager" if backend == "torch" else r["traces"]
        print(
            f"{backend:<11} {r['step_s_full']:>13.3f}  {r['ratio_10']:>16.3f}"
            f"  {r['ratio_20']:>17.3f}  {r['full_vs_dense']:>10.3f}"
            f"  {traces} over {r['growths']}"
        )


if __name__ == "__main__":
    main()
