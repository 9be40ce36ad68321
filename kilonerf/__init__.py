"""KiloNeRF: a radiance field split into thousands of tiny MLPs, trained and rendered on CPU or GPU."""

__version__ = "0.1.0"
