"""The KV-cache notebook's figures, kept for notebooks released before they moved to
``course_lib.attention.plots`` (``from course_lib.attention import kv_plots``); new code imports
``course_lib.attention.plots``."""
from .plots import plot_cache_anatomy, plot_cache_memory, plot_time_per_token

__all__ = ["plot_cache_anatomy", "plot_time_per_token", "plot_cache_memory"]
