"""The package version, read by pyproject.toml at build time and by ``dnn.__version__``."""
__version__ = "0.1.0"
