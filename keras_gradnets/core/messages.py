"""Printing the `verbose` messages of callbacks the way Keras does."""

import logging
import sys

import keras


def print_msg(message):
    """Prints `message` as Keras's own callbacks print theirs.

    To stdout when Keras's interactive logging is on (the default), else
    through the `logging` module, like `keras.src.utils.io_utils.print_msg`
    (which is not public API).
    """
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        logging.info(message)
