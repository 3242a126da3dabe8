"""Raw model scores -> probabilities, by the monotone maps fitted for the model and kept in its card.

A heatmap's peak or a regression head's confidence is a ranking, not a probability: of the joints
MoveNet placed right, only a third reached its 0.6. A model card may carry `score_maps` (card.py),
fitted on labelled photos by build/calibrate_scores.py: then a joint's score is the probability that
it is right (within COCO's tolerance for that joint: its OKS term over 0.5), and a person's the
probability that they are a labelled person found well (OKS over 0.5), so a threshold of 0.6 means
"60% sure". A card without maps leaves the scores as the model gives them.
"""

from __future__ import annotations

import numpy as np

from .card import ScoreMap, ScoreMaps


def apply(score_map: ScoreMap, raw: np.ndarray) -> np.ndarray:
    """Raw scores -> probabilities: linear between the map's knots, flat beyond them (NaN stays NaN)."""
    return np.interp(np.asarray(raw, dtype=np.float64), score_map.raw, score_map.probability)


def joint_probabilities(maps: ScoreMaps | None, scores: np.ndarray) -> np.ndarray:
    """(..., K) raw joint scores -> the probability that each joint is right."""
    scores = np.asarray(scores, dtype=np.float64)
    if maps is None:
        return scores
    return np.stack([apply(m, scores[..., k]) for k, m in enumerate(maps.joints)], axis=-1)


def person_probability(maps: ScoreMaps | None, score: float) -> float:
    """A person's raw score -> the probability that they are a person found well."""
    return float(score) if maps is None else float(apply(maps.person, np.asarray(score)))
