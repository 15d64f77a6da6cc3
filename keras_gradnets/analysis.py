"""Public namespace: statistics of a model's activations."""

from keras_gradnets.dynamic_capacity.activation_stats import activation_stats

__all__ = ["activation_stats"]
