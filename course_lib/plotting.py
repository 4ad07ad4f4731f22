"""The RoPE notebook's figures, kept for notebooks released before they moved to
``course_lib.attention.plots`` (``from course_lib import plotting``); new code imports
``course_lib.attention.plots``."""
from .attention.plots import (plot_vectors_2d, rope_frequency_spectrum, rope_long_range_decay,
                              rope_matrix_heatmaps, rope_pair_trajectories, rope_relative_scores)

__all__ = ["plot_vectors_2d", "rope_frequency_spectrum", "rope_matrix_heatmaps", "rope_pair_trajectories",
           "rope_relative_scores", "rope_long_range_decay"]
