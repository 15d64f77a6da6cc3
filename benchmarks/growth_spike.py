"""Loss change at a growth event: function-preserving vs random init.

Trains the sine regressor of notebook 02 (DynamicDense(500, chunks=5),
tanh) for 5 epochs, grows it by one chunk, and prints the relative change
of the training loss right at the growth, for both `growth_init` values.

    KERAS_BACKEND=jax python benchmarks/growth_spike.py
"""

import keras
import numpy as np

from keras_gradnets.layers import DynamicDense
from keras_gradnets.layers import link_dynamic_layers

x = np.linspace(-2 * np.pi, 2 * np.pi, 1000, dtype="float32")[:, None]
y = np.sin(x)
for growth_init in ("function_preserving", "random"):
    keras.utils.set_random_seed(0)
    hidden = DynamicDense(
        500, chunks=5, activation="tanh", growth_init=growth_init
    )
    model = keras.Sequential([keras.Input((1,)), hidden, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    link_dynamic_layers(model)
    model.fit(x, y, batch_size=50, epochs=5, verbose=0)
    before = model.evaluate(x, y, verbose=0)
    hidden.grow()
    after = model.evaluate(x, y, verbose=0)
    print(
        f"{keras.backend.backend():<10} {growth_init:<20} loss {before:.5f}"
        f" -> {after:.5f}, relative change {abs(after - before) / before:.2e}"
    )
