"""scikit-learn estimators over dnn models: ``DNNClassifier`` and ``DNNRegressor``.

Importing this subpackage imports scikit-learn (the ``sklearn`` extra); ``import dnn`` does not.
"""
from .classifier import DNNClassifier
from .regressor import DNNRegressor

__all__ = ["DNNClassifier", "DNNRegressor"]
