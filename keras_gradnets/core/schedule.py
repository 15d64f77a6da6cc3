"""The base class of keras_gradnets schedules."""

import keras


class Schedule:
    """A serializable map from a step (or epoch) number to a value.

    Schedules are small pure objects, in the spirit of
    `keras.optimizers.schedules.LearningRateSchedule` and optax: calling one
    with the same `step` always gives the same float, and it holds no state
    that training changes. Any callback can evaluate it; the schedulers in
    `keras_gradnets.callbacks` accept a `Schedule`, a
    `keras.optimizers.schedules.LearningRateSchedule` or any plain callable.

    Subclasses implement `__call__(step)` and `get_config()`.

    Example:

    ```python
    class Constant(keras_gradnets.schedules.Schedule):
        def __init__(self, value):
            self.value = value

        def __call__(self, step):
            return self.value

        def get_config(self):
            return {"value": self.value}
    ```
    """

    def __call__(self, step):
        raise NotImplementedError(
            f"Schedule '{self.__class__.__name__}' must override "
            "`__call__(self, step)`."
        )

    def get_config(self):
        raise NotImplementedError(
            f"Schedule '{self.__class__.__name__}' must override "
            "`get_config()`."
        )

    @classmethod
    def from_config(cls, config):
        """Instantiates a `Schedule` from its config.

        Args:
            config: Output of `get_config()`.

        Returns:
            A `Schedule` instance.
        """
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"


def serialize(schedule):
    """Returns the serialized config of `schedule`."""
    return keras.saving.serialize_keras_object(schedule)


def deserialize(config, custom_objects=None):
    """Returns the schedule described by `config` (see `serialize`)."""
    return keras.saving.deserialize_keras_object(
        config, custom_objects=custom_objects
    )


def get(identifier):
    """Returns a callable schedule from `identifier`.

    Args:
        identifier: A `Schedule`, a
            `keras.optimizers.schedules.LearningRateSchedule`, a callable
            taking the step number, or a serialized schedule config (dict).

    Returns:
        A callable mapping a step number to a value.
    """
    if isinstance(identifier, dict):
        identifier = deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(
        "Invalid value received for argument `schedule`. Expected a "
        "`keras_gradnets.schedules.Schedule`, a "
        "`keras.optimizers.schedules.LearningRateSchedule`, a callable "
        f"taking the step number, or a schedule config dict. "
        f"Received: schedule={identifier!r}"
    )
