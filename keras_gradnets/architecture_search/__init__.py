"""Variational model optimization (Grathwohl et al.): Concrete relaxations
over depth and width, learned with the weights in one `fit`."""
