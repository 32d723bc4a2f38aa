"""arbg: autoregressive Boltzmann generators for peptides."""

__version__ = "0.1.0"
