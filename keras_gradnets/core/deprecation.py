"""Old argument names that keep working, with a warning, for one release."""

import warnings


def renamed_argument(owner, old_name, old_value, new_name, new_value, default):
    """Returns the value of an argument renamed from `old_name`.

    Args:
        owner: The class or function taking it, for the messages.
        old_name: The deprecated name.
        old_value: What the caller passed under `old_name`, or `None`.
        new_name: The current name.
        new_value: What the caller passed under `new_name`.
        default: The default of `new_name`.

    Returns:
        `old_value` (with a `DeprecationWarning`) when only the old name was
        given, else `new_value`.

    Raises:
        ValueError: if both names were given.
    """
    if old_value is None:
        return new_value
    if new_value != default:
        raise ValueError(
            f"`{owner}` received both `{new_name}={new_value!r}` and its "
            f"deprecated spelling `{old_name}={old_value!r}`. Pass only "
            f"`{new_name}`."
        )
    warnings.warn(
        f"`{owner}({old_name}=...)` is deprecated and will be removed in "
        f"0.4: pass `{new_name}=...` instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
