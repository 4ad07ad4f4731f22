"""Greedy layer-wise training of a deep network, and the lecture's three recipes (Lecture 4, "Deep Network
Training", Ideas #1-#3; Bengio et al., 2006).

The deep network: L hidden layers of logistic sigmoid units and a softmax output layer,

    h_0 = x,   h_l = σ(W_l h_{l-1} + b_l)  (l = 1..L),   p(y | x) = softmax(W_out h_L + b_out).

    Idea #1  supervised fine-tuning only: backprop through the whole network from a random start.
    Idea #2  1. supervised layer-wise pre-training, 2. supervised fine-tuning.
    Idea #3  1. unsupervised layer-wise pre-training, 2. supervised fine-tuning.

Greedy layer-wise pre-training "works bottom-up: train hidden layer 1, then fix its parameters; train
hidden layer 2, then fix its parameters; ...; train hidden layer n, then fix its parameters". Level l is
trained on h_{l-1}, the output of the fixed levels below (``encode_stack``), either

* unsupervised (Idea #3): as the encoder of an autoencoder that reconstructs h_{l-1} (a fresh decoder,
  thrown away afterwards), loss ||h_{l-1} − DECODER(ENCODER(h_{l-1}))||²; or
* supervised (Idea #2): with a *temporary* softmax output layer on top of level l, trained on the labels
  with the cross-entropy, thrown away afterwards.

Supervised fine-tuning then "backprops and updates all parameters", starting from the pretrained values.
Every run uses plain minibatch SGD (as in 2006), with the samples drawn from a seeded generator.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .autoencoder import AutoencoderLayer, minibatches, reconstruction_loss, train_autoencoder

__all__ = ["encode_stack", "DeepNet", "fix", "unfix", "pretrain_level_unsupervised", "pretrain_level_supervised",
           "pretrain_layerwise", "fine_tune", "error_rate", "RecipeConfig", "RecipeResult", "RECIPES", "run_recipe",
           "summarize", "config_dict"]

Encode = Callable[[Tensor, Sequence[Tensor], Sequence[Tensor]], Tensor]


def encode_stack(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """The features of a stack of fixed sigmoid layers: h_0 = x, h_l = σ(W_l h_{l-1} + b_l), l = 1..L.

    Inputs:
      x: (..., d_0) inputs, one per row (h_{l-1} W_lᵀ + b_l is W_l h_{l-1} + b_l for every row);
      weights: L tensors, W_l of shape (d_l, d_{l-1}) (``nn.Linear.weight``'s layout);
      biases: L tensors, b_l of shape (d_l,).
    Returns: h_L, shape (..., d_L); x itself when L = 0.
    """
    if len(weights) != len(biases):
        raise ValueError(f"got {len(weights)} weight matrices but {len(biases)} bias vectors")
    h = x                                                            # h_0 = x          (..., d_0)
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        if W.dim() != 2 or b.shape != W.shape[:1] or h.shape[-1] != W.shape[1]:
            raise ValueError(f"level {l}: W {tuple(W.shape)}, b {tuple(b.shape)} do not fit inputs of size {h.shape[-1]}")
        h = torch.sigmoid(h @ W.T + b)                               # h_l = σ(W_l h_{l-1} + b_l)  (..., d_l)
    return h


class DeepNet(nn.Module):
    """d_in → hidden[0] → ... → hidden[L-1] (sigmoid units) → n_classes (softmax, as logits).

    ``encode(x, weights, biases)`` computes the hidden layers (``encode_stack``; the notebook passes the
    student's function), so that the student's code runs in every forward pass.
    """

    def __init__(self, d_in: int, hidden: Sequence[int], n_classes: int, encode: Encode = encode_stack):
        super().__init__()
        if not hidden:
            raise ValueError("a deep network needs at least one hidden layer")
        dims = [d_in, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))   # W_l: (d_l, d_{l-1})
        self.output = nn.Linear(dims[-1], n_classes)                                         # W_out
        self.encode = encode

    def features(self, x: Tensor, levels: int | None = None) -> Tensor:
        """h_levels (all L levels by default): (N, d_levels)."""
        layers = self.hidden[:levels] if levels is not None else self.hidden
        return self.encode(x, [m.weight for m in layers], [m.bias for m in layers])

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))                         # logits (N, n_classes)


def fix(module: nn.Module) -> None:
    """"Fix its parameters": no gradient, so no optimiser step, ever changes them."""
    for p in module.parameters():
        p.requires_grad_(False)
        p.grad = None                      # and no stale gradient from its own training is left behind


def unfix(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def _inputs_of_level(net: DeepNet, level: int, x: Tensor) -> Tensor:
    """h_{level-1} for the whole training set, from the fixed levels below (computed once: they are fixed)."""
    with torch.no_grad():
        return net.features(x, levels=level)                         # (N, d_{level})


def pretrain_level_unsupervised(net: DeepNet, level: int, x: Tensor, *, epochs: int, lr: float, batch_size: int,
                                generator: torch.Generator, loss_fn=reconstruction_loss,
                                on_epoch: Callable[[int, float], None] | None = None) -> tuple[list[float], AutoencoderLayer]:
    """Train hidden layer ``level`` (0-based) as the encoder of an autoencoder of h_{level-1}, then fix it.

    Returns: (mean reconstruction loss per epoch, a copy of the trained autoencoder, for plots).
    """
    enc = net.hidden[level]
    h_below = _inputs_of_level(net, level, x)                        # the fixed levels' output
    ae = AutoencoderLayer(enc.in_features, enc.out_features, encoder=enc)   # the network's own layer as encoder
    history = train_autoencoder(ae, h_below, epochs=epochs, lr=lr, batch_size=batch_size, generator=generator,
                                loss_fn=loss_fn, on_epoch=on_epoch)
    fix(enc)
    return history, copy.deepcopy(ae)


def pretrain_level_supervised(net: DeepNet, level: int, x: Tensor, y: Tensor, *, epochs: int, lr: float,
                              batch_size: int, generator: torch.Generator,
                              on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train hidden layer ``level`` (0-based) with a temporary softmax output layer on the labels, then fix
    it and throw the temporary layer away. Returns the mean cross-entropy per epoch."""
    layer = net.hidden[level]
    h_below = _inputs_of_level(net, level, x)
    temporary = nn.Linear(layer.out_features, net.output.out_features).to(x.device)
    opt = torch.optim.SGD([*layer.parameters(), *temporary.parameters()], lr=lr)
    history = []
    for epoch in range(epochs):
        total = 0.0
        for idx in minibatches(len(x), batch_size, generator):
            logits = temporary(torch.sigmoid(layer(h_below[idx])))  # softmax(W_tmp σ(W_l h_{l-1} + b_l))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(x))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    fix(layer)
    return history


def pretrain_layerwise(net: DeepNet, x: Tensor, y: Tensor | None = None, *, objective: str, epochs: int, lr: float,
                       batch_size: int, generator: torch.Generator, loss_fn=reconstruction_loss,
                       log: Callable[[dict], None] | None = None) -> tuple[list[list[float]], list[AutoencoderLayer]]:
    """Greedy, bottom-up: level 1, fix; level 2 on level 1's output, fix; ... (objective 'unsupervised' or
    'supervised'). Returns (the loss curve of each level, the autoencoders (unsupervised only))."""
    if objective not in ("unsupervised", "supervised"):
        raise ValueError(f"objective must be 'unsupervised' or 'supervised', got {objective!r}")
    if objective == "supervised" and y is None:
        raise ValueError("supervised layer-wise pretraining needs the labels y")
    curves, autoencoders = [], []
    for level in range(len(net.hidden)):
        def on_epoch(epoch, loss, level=level):
            if log is not None:
                log({f"pretrain/level{level + 1}_loss": loss, "pretrain/epoch": level * epochs + epoch})
        if objective == "unsupervised":
            curve, ae = pretrain_level_unsupervised(net, level, x, epochs=epochs, lr=lr, batch_size=batch_size,
                                                    generator=generator, loss_fn=loss_fn, on_epoch=on_epoch)
            autoencoders.append(ae)
        else:
            curve = pretrain_level_supervised(net, level, x, y, epochs=epochs, lr=lr, batch_size=batch_size,
                                              generator=generator, on_epoch=on_epoch)
        curves.append(curve)
    return curves, autoencoders


@torch.no_grad()
def error_rate(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """Percent of the examples whose most probable class is wrong."""
    return 100.0 * (net(x).argmax(dim=-1) != y).double().mean().item()


def fine_tune(net: DeepNet, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int,
              generator: torch.Generator, x_test: Tensor | None = None, y_test: Tensor | None = None,
              log: Callable[[dict], None] | None = None) -> dict[str, list[float]]:
    """Supervised fine-tuning: "backprop and update all parameters" (every level is unfixed first).

    Returns learning curves: 'loss' (mean training cross-entropy per epoch), 'train_error' and
    'test_error' (percent) after each epoch; entry 0 of the error curves is before fine-tuning.
    """
    unfix(net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    curves = {"loss": [], "train_error": [error_rate(net, x, y)], "test_error": []}
    if x_test is not None:
        curves["test_error"].append(error_rate(net, x_test, y_test))
    for epoch in range(epochs):
        total = 0.0
        for idx in minibatches(len(x), batch_size, generator):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        curves["loss"].append(total / len(x))
        curves["train_error"].append(error_rate(net, x, y))
        if x_test is not None:
            curves["test_error"].append(error_rate(net, x_test, y_test))
        if log is not None:
            log({"finetune/epoch": epoch + 1, "finetune/loss": curves["loss"][-1],
                 "finetune/train_error": curves["train_error"][-1],
                 **({"finetune/test_error": curves["test_error"][-1]} if x_test is not None else {})})
    return curves


# ---------------------------------------------------------------------------------------------------------
# The three recipes as one experiment
# ---------------------------------------------------------------------------------------------------------
RECIPES = {
    1: "Idea #1: supervised fine-tuning only",
    2: "Idea #2: supervised layer-wise pre-training + fine-tuning",
    3: "Idea #3: unsupervised layer-wise pre-training + fine-tuning",
}


@dataclass
class RecipeConfig:
    """Hyperparameters shared by the three recipes (only the pre-training step differs)."""
    hidden: tuple[int, ...] = (100, 100, 100)   # L = 3 hidden layers of sigmoid units
    pretrain_epochs: int = 5                   # per level (Ideas #2 and #3)
    finetune_epochs: int = 40                  # the same for every recipe
    lr: float = 1.0                            # plain SGD, no momentum, no weight decay
    batch_size: int = 16


@dataclass
class RecipeResult:
    recipe: int
    seed: int
    net: DeepNet
    curves: dict[str, list[float]]                                   # fine-tuning learning curves
    pretrain_curves: list[list[float]] = field(default_factory=list)  # per level (Ideas #2, #3)
    autoencoders: list[AutoencoderLayer] = field(default_factory=list)  # after pre-training (Idea #3)
    first_layer_init: Tensor | None = None                           # W_1 at the random start
    first_layer_pretrained: Tensor | None = None                     # W_1 before fine-tuning (Ideas #2, #3)

    @property
    def train_error(self) -> float:
        return self.curves["train_error"][-1]

    @property
    def test_error(self) -> float:
        return self.curves["test_error"][-1]


def run_recipe(recipe: int, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, config: RecipeConfig,
               seed: int, encode: Encode = encode_stack, loss_fn=reconstruction_loss,
               log: Callable[[dict], None] | None = None) -> RecipeResult:
    """Idea #``recipe`` (1, 2 or 3) on flat inputs x (N, d_in) in [0, 1] with labels y (N,).

    The seed fixes the initial weights (identical for the three recipes) and the order of the examples.
    ``encode`` and ``loss_fn`` are the student's ``encode_stack`` and ``reconstruction_loss`` in the
    notebook. ``log`` receives dicts of metrics (W&B's ``run.log``).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be 1, 2 or 3, got {recipe!r}")
    torch.manual_seed(seed)
    n_classes = int(max(int(y.max()), int(y_test.max()))) + 1
    net = DeepNet(x.shape[1], config.hidden, n_classes, encode=encode).to(x.device)
    generator = torch.Generator().manual_seed(seed)
    result = RecipeResult(recipe, seed, net, curves={}, first_layer_init=net.hidden[0].weight.detach().clone())
    if recipe in (2, 3):
        objective = "supervised" if recipe == 2 else "unsupervised"
        result.pretrain_curves, result.autoencoders = pretrain_layerwise(
            net, x, y, objective=objective, epochs=config.pretrain_epochs, lr=config.lr,
            batch_size=config.batch_size, generator=generator, loss_fn=loss_fn, log=log)
        result.first_layer_pretrained = net.hidden[0].weight.detach().clone()
    result.curves = fine_tune(net, x, y, epochs=config.finetune_epochs, lr=config.lr, batch_size=config.batch_size,
                              generator=generator, x_test=x_test, y_test=y_test, log=log)
    return result


def summarize(results: Sequence[RecipeResult], metric: str = "test_error") -> dict[int, tuple[float, float, int]]:
    """{recipe: (mean, sample standard deviation, number of seeds)} of a final metric."""
    out = {}
    for r in sorted({res.recipe for res in results}):
        values = torch.tensor([getattr(res, metric) for res in results if res.recipe == r], dtype=torch.float64)
        std = values.std().item() if len(values) > 1 else math.nan
        out[r] = (values.mean().item(), std, len(values))
    return out


def config_dict(config: RecipeConfig) -> dict:
    return asdict(config)
