"""Public namespace: figures of a `fit` with the states the callbacks log."""

import numpy as np

__all__ = ["is_state_key", "plot_history"]

# The keys the package's callbacks log a state under, alone or as
# `<key>_<layer name>` (see `keras_gradnets.callbacks.StateScheduler`).
STATE_KEYS = ("g", "dropin", "p", "capacity", "temperature")


def is_state_key(key):
    """Whether a log key holds a state that a callback of the package sets.

    Args:
        key: A key of `History.history`, such as `"g"` or `"p_dense_1"`.

    Returns:
        `True` for `g`, `dropin`, `p`, `capacity`, `temperature` and their
        per-layer forms `<key>_<layer name>`.
    """
    return any(key == s or key.startswith(f"{s}_") for s in STATE_KEYS)


def plot_history(
    history,
    metrics="loss",
    states=None,
    ax=None,
    state_ax=None,
    label=None,
    color=None,
    yscale="linear",
    state_yscale="linear",
    legend=True,
):
    """Plots metrics of a `fit` with the logged states on a second axis.

    The metrics are solid lines on `ax`; the states (`g`, `dropin`, `p_*`,
    `capacity`, `temperature`, ...) are dotted lines on a second y axis;
    the epochs in which `CapacityGrowth` grew the model (where the logged
    `growths` count rises) are dashed vertical lines. Epoch `e` of
    the logs is drawn at `x = e + 1`, after its last step. Call it again
    with the returned axes to compare runs in one figure.

    Requires matplotlib (`pip install keras-gradnets[plots]`).

    Args:
        history: A `keras.callbacks.History` (what `fit` returns) or its
            `history` dict.
        metrics: A key or a list of keys of the logs to draw on `ax`.
            Defaults to `"loss"`.
        states: A list of keys to draw on the second axis. Defaults to
            every key the package's callbacks log a state under; an empty
            list draws none.
        ax: The matplotlib axes to draw on. Defaults to a new figure's.
        state_ax: The second axes, from a previous call. Defaults to a
            new twin of `ax` when there are states to draw.
        label: A prefix for the legend entries, such as the run's name.
        color: One matplotlib color for all the lines of this run.
            Defaults to the axes' next color for each metric.
        yscale: The scale of `ax`, such as `"log"`.
        state_yscale: The scale of the second axis; `"log"` suits a
            temperature.
        legend: Whether to draw one legend for the lines of both axes.
            Defaults to `True`.

    Returns:
        The tuple `(ax, state_ax)`; `state_ax` is `None` when no state was
        drawn.

    Raises:
        ValueError: if a key of `metrics` or `states` is not in the logs.

    Example:

    ```python
    scheduler = keras_gradnets.callbacks.GradNetScheduler(tau=5)
    history = model.fit(x, y, validation_split=0.2, epochs=20,
                        callbacks=[scheduler])
    ax, g_ax = keras_gradnets.plotting.plot_history(
        history, metrics=["loss", "val_loss"])  # g dotted, on g_ax
    ```
    """
    import matplotlib.pyplot as plt

    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise ValueError(
            "`history` must be a `keras.callbacks.History` or its `history` "
            f"dict. Received: history={history!r}"
        )
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if states is None:
        states = [key for key in logs if is_state_key(key)]
    for argument, keys in (("metrics", metrics), ("states", states)):
        missing = [key for key in keys if key not in logs]
        if missing:
            raise ValueError(
                f"`{argument}` names keys that are not in the logs: "
                f"{missing}. The logs hold: {sorted(logs)}."
            )
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    prefix = f"{label}: " if label else ""
    for key in metrics:
        values = np.asarray(logs[key], dtype=float)
        epochs = np.arange(1, len(values) + 1)
        ax.plot(epochs, values, color=color, label=f"{prefix}{key}")
    ax.set(xlabel="epoch", yscale=yscale)
    if "growths" in logs:
        counts = np.asarray(logs["growths"], dtype=float)
        grown = np.flatnonzero(np.diff(counts, prepend=0) > 0) + 1
        for i, epoch in enumerate(grown):
            ax.axvline(
                epoch,
                color=color or "gray",
                ls="--",
                lw=0.8,
                label=f"{prefix}growth" if i == 0 else None,
            )
    if states:
        if state_ax is None:
            state_ax = ax.twinx()
            state_ax.set(ylabel="state (dotted)", yscale=state_yscale)
        for key in states:
            values = np.asarray(logs[key], dtype=float)
            epochs = np.arange(1, len(values) + 1)
            state_ax.plot(
                epochs, values, ls=":", color=color, label=f"{prefix}{key}"
            )
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if state_ax is not None:
            more = state_ax.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        for axes in (ax, state_ax):
            if axes is not None and axes.get_legend() is not None:
                axes.get_legend().remove()
        (state_ax or ax).legend(handles, labels, fontsize=8)
    return ax, state_ax
