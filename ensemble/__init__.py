"""Ensemble stage: weighting schemes, the honest evaluation protocol, statistics, export
and predict.

Reads predictions only through ``trainers.predictions``; imports no Ray.

>>> import numpy as np
>>> from ensemble import create_method
>>> P = np.array([[[.8, .2], [.3, .7]], [[.6, .4], [.1, .9]]])
>>> create_method("wen_acc").fit(P, np.array([0, 1])).weights_.tolist()
[0.5, 0.5]
"""

from ensemble.config import EnsembleSettings
from ensemble.export import ExportError, export_ensemble
from ensemble.methods import METHODS, EnsembleMethod, MethodOptions, create_method
from ensemble.objective import WeightObjective
from ensemble.predict import predict_images
from ensemble.run import EnsembleResult, run_ensemble

__all__ = [
    "METHODS",
    "EnsembleMethod",
    "EnsembleResult",
    "EnsembleSettings",
    "ExportError",
    "MethodOptions",
    "WeightObjective",
    "create_method",
    "export_ensemble",
    "predict_images",
    "run_ensemble",
]
