"""One TensorFlow worker of a two-worker `MultiWorkerMirroredStrategy`
over 127.0.0.1.

`tests/test_processes.py` starts two of these:
`python -m tests.processes.tensorflow_worker <worker index> fit <port 0>
<port 1>`. Each builds a plain Keras model in the strategy's scope and
fits it, and prints as JSON on its last line whether `fit` ran or the
error Keras raised.
"""

import json
import os
import sys


def fit():
    """A plain Keras `fit` under the strategy: `{"trained": True}`, or
    the error's type and message."""
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
    x, y = np.ones((16, 4), "float32"), np.ones((16, 1), "float32")
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    except Exception as error:  # The result is the error Keras raises.
        return {"error": type(error).__name__, "message": str(error)}
    return {"trained": True}


def main():
    index, probe, *ports = sys.argv[1:]
    workers = [f"127.0.0.1:{port}" for port in ports]
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": int(index)},
        }
    )
    print(json.dumps({"fit": fit}[probe]()), flush=True)


if __name__ == "__main__":
    main()
