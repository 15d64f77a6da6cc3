"""Run from the wheel's fresh environment: the package imports from the
wheel (not the checkout), and Keras's `TensorBoard` callback records the
states the package logs, with the `tensorboard` extra installed."""

import pathlib
import sys
import tempfile

import keras
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import keras_gradnets as kg

if "site-packages" not in kg.__file__:
    sys.exit(f"keras_gradnets imported from {kg.__file__}, not the wheel")
print("keras_gradnets", kg.__version__, "from", kg.__file__)
print("backend:", keras.backend.backend())

model = keras.Sequential(
    [keras.Input((3,)), keras.layers.Dense(4), kg.layers.GReLU()]
)
model.compile("sgd", "mse")
with tempfile.TemporaryDirectory() as logdir:
    model.fit(
        np.ones((8, 3)),
        np.ones((8, 4)),
        epochs=3,
        verbose=0,
        # TensorBoard first: the states reach it whatever the order.
        callbacks=[
            keras.callbacks.TensorBoard(logdir),
            kg.callbacks.GradNetScheduler(tau=2),
        ],
    )
    (events,) = pathlib.Path(logdir, "train").glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(events))
    accumulator.Reload()
    g = [
        float(tensor_util.make_ndarray(event.tensor_proto))
        for event in accumulator.Tensors("epoch_g")
    ]
print("TensorBoard epoch_g:", g)
if g != [0.0, 0.5, 1.0]:
    sys.exit(f"TensorBoard recorded g={g}, expected [0.0, 0.5, 1.0]")
