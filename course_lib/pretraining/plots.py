"""The figures of the pretraining notebook. Each helper builds one matplotlib figure and returns it.

Helpers receive results (lists of ``RecipeResult``, curves, trained modules) and never import a reference
implementation of a graded exercise: the notebook computed those results with the student's functions.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .autoencoder import AutoencoderLayer
from .layerwise import RECIPES, RecipeResult

__all__ = ["recipe_learning_curves", "pretraining_losses", "autoencoder_reconstructions", "first_layer_features",
           "lm_pretraining_curve", "fine_tuning_comparison"]

_COLORS = {1: "C3", 2: "C1", 3: "C0"}


def _band(ax, x, runs: Tensor, color: str, label: str, ls: str = "-") -> None:
    """Mean over seeds (rows of ``runs``) as a line, min..max over seeds as a band."""
    ax.plot(x, runs.mean(0), color=color, ls=ls, label=label)
    if len(runs) > 1:
        ax.fill_between(x, runs.min(0).values, runs.max(0).values, color=color, alpha=0.15, lw=0)


def recipe_learning_curves(results: Sequence[RecipeResult]) -> Figure:
    """Left: test error (solid) and training error (dashed) after each fine-tuning epoch; right: the
    training cross-entropy; one colour per recipe, mean over seeds with the min..max band."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3), layout="constrained")
    for r in sorted({res.recipe for res in results}):
        runs = [res for res in results if res.recipe == r]
        test = torch.tensor([res.curves["test_error"] for res in runs], dtype=torch.float64)
        train = torch.tensor([res.curves["train_error"] for res in runs], dtype=torch.float64)
        loss = torch.tensor([res.curves["loss"] for res in runs], dtype=torch.float64)
        epochs = torch.arange(test.shape[1])
        _band(ax1, epochs, test, _COLORS[r], f"Idea #{r} test")
        ax1.plot(epochs, train.mean(0), color=_COLORS[r], ls="--", lw=1, label=f"Idea #{r} train")
        _band(ax2, torch.arange(1, loss.shape[1] + 1), loss, _COLORS[r], RECIPES[r])
    ax1.set_yscale("log")
    ax1.set(xlabel="fine-tuning epoch (0 = before fine-tuning)", ylabel="error (%)",
            title="Error during supervised fine-tuning")
    ax2.set_yscale("log")
    ax2.set(xlabel="fine-tuning epoch", ylabel="training cross-entropy (nats)", title="Training loss")
    ax1.legend(fontsize=8, ncol=2)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    n = len({res.seed for res in results})
    fig.suptitle(f"The three recipes on scikit-learn's digits (mean over {n} seeds, band: min to max)")
    return fig


def pretraining_losses(results: Sequence[RecipeResult]) -> Figure:
    """The layer-wise pre-training loss of each level: reconstruction (Idea #3), cross-entropy of the
    temporary output layer (Idea #2), mean over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    for ax, r, what in zip(axes, (3, 2), ("reconstruction loss ||h − h'||²", "cross-entropy (temporary output layer)")):
        runs = [res for res in results if res.recipe == r and res.pretrain_curves]
        if not runs:
            ax.set_visible(False)
            continue
        for level in range(len(runs[0].pretrain_curves)):
            curve = torch.tensor([res.pretrain_curves[level] for res in runs], dtype=torch.float64)
            _band(ax, torch.arange(1, curve.shape[1] + 1), curve, f"C{level}", f"level {level + 1}")
        ax.set(xlabel="pre-training epoch of the level", ylabel=what, title=RECIPES[r].split(":")[0] + ": " + what)
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    return fig


@torch.no_grad()
def autoencoder_reconstructions(autoencoders: Sequence[AutoencoderLayer], x: Tensor, n: int = 10,
                                image_shape: tuple[int, int] = (8, 8)) -> Figure:
    """Row 0: n digits x. Row l: x encoded up to level l and decoded back down through levels l, ..., 1,

        x'_l = DECODER_1(... DECODER_l(ENCODER_l(... ENCODER_1(x)))),

    i.e. what the first l levels keep of the digit."""
    x = x[:n]
    rows = [("input x", x)]
    for level in range(1, len(autoencoders) + 1):
        h = x
        for ae in autoencoders[:level]:
            h = ae.encode(h)
        for ae in reversed(autoencoders[:level]):
            h = ae.decode(h)
        err = ((x - h) ** 2).sum(dim=1).mean().item()
        rows.append((f"level {level}\n||x − x'||² = {err:.2f}", h))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.25 * len(rows) + 0.4), layout="constrained",
                             squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(images[j].reshape(image_shape).cpu(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("Reconstructions after unsupervised pre-training: encode up to level l, decode back down")
    return fig


def first_layer_features(weights: Mapping[str, Tensor], n: int = 24, cols: int = 6,
                         image_shape: tuple[int, int] = (8, 8)) -> Figure:
    """The weights of the first n hidden units (rows of W_1, shape (d_1, 64)) as 8×8 images, one panel per
    entry of ``weights`` (title → W_1). Each unit's image is scaled to its own largest |weight| (red:
    positive weights, the pixel excites the unit; blue: negative); the panel title gives the mean norm."""
    panels = len(weights)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(3.3 * panels, 3.3 * rows / cols + 0.9), layout="constrained")
    subfigs = fig.subfigures(1, panels, squeeze=False)[0]
    for sub, (title, W) in zip(subfigs, weights.items()):
        W = W.detach().cpu().to(torch.float64)
        norm = W.norm(dim=1).mean().item()
        W = W[:n]
        axes = sub.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(W):
                m = W[k].abs().max().clamp_min(1e-12)
                ax.imshow(W[k].reshape(image_shape), cmap="RdBu_r", vmin=-m, vmax=m)
            else:
                ax.set_visible(False)
        sub.suptitle(f"{title}\nmean ||w_j|| = {norm:.2f}", fontsize=9)
    fig.suptitle(f"First-layer features: the first {n} rows w_j of W_1 as 8×8 images")
    return fig


def lm_pretraining_curve(curves: Mapping[str, Sequence[float]], vocab_size: int, smooth: int = 20) -> Figure:
    """Training loss of each step (light) and its running mean over ``smooth`` steps, the held-out loss
    (points), and log V, the loss of a uniform guess over the vocabulary."""
    steps = torch.tensor(curves["step"], dtype=torch.float64)
    loss = torch.tensor(curves["loss"], dtype=torch.float64)
    k = max(1, min(smooth, len(loss)))
    running = torch.tensor([loss[max(0, i - k + 1):i + 1].mean().item() for i in range(len(loss))])
    fig, ax = plt.subplots(figsize=(8.5, 4), layout="constrained")
    ax.plot(steps, loss, color="C0", alpha=0.25, lw=0.8)
    ax.plot(steps, running, color="C0", label=f"training loss (running mean over {k} steps)")
    if curves.get("held_out"):
        ax.plot(curves["eval_step"], curves["held_out"], "o-", color="C1", label="held-out sentences")
    ax.axhline(math.log(vocab_size), color="0.5", ls=":", label=f"uniform guess: log V = {math.log(vocab_size):.2f}")
    ax.set(xlabel="pre-training step", ylabel="negative log-likelihood per token (nats)",
           title="Generative pre-training: mean NLL per token of whole sentences, padding masked out")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def fine_tuning_comparison(sizes: Sequence[int], pretrained: Mapping[int, Sequence[float]],
                           scratch: Mapping[int, Sequence[float]], chance: float = 50.0) -> Figure:
    """Test accuracy against the number of labelled examples (log scale), fine-tuned from the pre-trained
    LM vs the same model trained from scratch; mean over seeds, bars from min to max."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2), layout="constrained")
    for accs, label, color, marker in ((pretrained, "pre-trained, then fine-tuned", "C0", "o"),
                                       (scratch, "same model from scratch", "C3", "s")):
        means = [sum(accs[n]) / len(accs[n]) for n in sizes]
        lo = [m - min(accs[n]) for m, n in zip(means, sizes)]
        hi = [max(accs[n]) - m for m, n in zip(means, sizes)]
        ax.errorbar(sizes, means, yerr=[lo, hi], color=color, marker=marker, capsize=3, label=label)
    ax.axhline(chance, color="0.5", ls=":", label=f"chance ({chance:g}%)")
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set(xlabel="labelled examples for fine-tuning", ylabel="test accuracy (%)",
           title="Real or shuffled? Fine-tuned vs from scratch, on held-out sentences")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig
