"""Data that ships on every machine (no download, ever): see COURSE_DESIGN.md §5.

* scikit-learn's ``load_digits``: 1,797 real handwritten digits, 8×8 grey, ten classes;
* scikit-image's bundled photographs ``camera`` (512×512 grey) and ``astronaut`` (512×512 RGB);
* Python's own ``pydoc_data.topics``: 79 documentation topics, about 465 KB of English prose.

Everything is returned as torch tensors (or str), with fixed seeds where a split is random.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Split:
    """A labelled train/test split: x (N, ...) float32, y (N,) int64."""
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's handwritten digits as images (N, 1, 8, 8) in [0, 1], split stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]   # (1797, 1, 8, 8), 17 grey levels
    y = torch.from_numpy(d.target.astype(np.int64))                      # (1797,)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                           stratify=d.target)
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return Split(x[idx_train], y[idx_train], x[idx_test], y[idx_test])


def camera() -> Tensor:
    """The 'cameraman' photograph bundled with scikit-image: (512, 512) float32 in [0, 1]."""
    from skimage import data
    return torch.from_numpy(data.camera().astype(np.float32) / 255.0)


def astronaut() -> Tensor:
    """Eileen Collins, the colour photograph bundled with scikit-image: (3, 512, 512) float32 in [0, 1]."""
    from skimage import data
    return torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()


def pydoc_topics() -> dict[str, str]:
    """Python's own documentation topics (``pydoc_data.topics``): {topic name: English text}."""
    from pydoc_data.topics import topics
    return dict(sorted(topics.items()))


def pydoc_text() -> str:
    """All the pydoc topics as one text, topics separated by a blank line, in a fixed order."""
    return "\n\n".join(pydoc_topics().values())
