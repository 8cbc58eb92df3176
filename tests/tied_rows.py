"""Three-class probability rows that tie exactly, for the multi-class AUC tests of
``trainers.metrics`` and ``ensemble._metrics``."""

from __future__ import annotations

import numpy as np


def tied_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows drawn from a few probability vectors, so many cells tie exactly.

    Some rows (0.7 + 0.2 + 0.1) sum to 1 - 2**-53 in floating point, others to exactly 1:
    dividing by the row sum moves only the first kind and breaks their ties with the second.
    """
    palette = np.array(
        [
            [0.1, 0.2, 0.7],
            [0.7, 0.2, 0.1],
            [0.2, 0.1, 0.7],
            [0.3, 0.6, 0.1],
            [0.1, 0.6, 0.3],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.7, 0.1, 0.2],
        ]
    )
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, n), palette[rng.integers(0, len(palette), n)]
