"""One autoencoder layer, as Lecture 4 draws it ("Unsupervised pretraining of the first layer").

What should the first hidden layer predict, when there are no labels? What else do we observe? The
input! An autoencoder maps x to a code z = ENCODER(x) and back to a reconstruction x' = DECODER(z), and is
trained so that x' is close to x:

    Loss = ||x − DECODER(ENCODER(x))||²                                   (the lecture's reconstruction loss)

trained "with the same backpropagation algorithm as a 2-layer neural network, with x_m as both input and
output". Here both halves are a linear map followed by a logistic sigmoid, as in Bengio et al. (2006):

    z  = ENCODER(x) = σ(W x + b),      W: (d_hidden, d_in),  b: (d_hidden,)
    x' = DECODER(z) = σ(W' z + c),     W': (d_in, d_hidden), c: (d_in,)

The sigmoid output suits inputs in [0, 1]: digit intensities at level 1, and sigmoid features of the
level below at every higher level. Shapes: N examples, d_in inputs, d_hidden code units.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["reconstruction_loss", "AutoencoderLayer", "minibatches", "train_autoencoder"]


def reconstruction_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """The lecture's reconstruction loss ||x − x'||², averaged over the examples of a batch.

    Inputs:
      x: (N, d) the inputs (N ≥ 1);  x_hat: (N, d) their reconstructions x' = DECODER(ENCODER(x)).
    Returns: a 0-dim tensor (1/N) Σ_n Σ_i (x[n, i] − x_hat[n, i])², in the dtype of x.
      A sum over the d coordinates (the squared Euclidean norm of the lecture), a mean over the examples
      (so the learning rate does not depend on the batch size).
    """
    if x.shape != x_hat.shape or x.dim() != 2:
        raise ValueError(f"expected x and x_hat of the same shape (N, d), got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    return ((x - x_hat) ** 2).sum(dim=1).mean()          # ||x_n − x'_n||² per example (N,), then the mean


class AutoencoderLayer(nn.Module):
    """ENCODER(x) = σ(W x + b), DECODER(z) = σ(W' z + c): one level of the stack.

    ``encoder`` may be passed in: greedy layer-wise pretraining trains the *hidden layer of the deep
    network itself* as the encoder (the same ``nn.Linear``), with a fresh decoder that is thrown away
    afterwards.
    """

    def __init__(self, d_in: int, d_hidden: int, encoder: nn.Linear | None = None):
        super().__init__()
        if encoder is not None and (encoder.in_features, encoder.out_features) != (d_in, d_hidden):
            raise ValueError(f"encoder maps {encoder.in_features} → {encoder.out_features}, "
                             f"expected {d_in} → {d_hidden}")
        self.encoder = encoder if encoder is not None else nn.Linear(d_in, d_hidden)   # W: (d_hidden, d_in)
        self.decoder = nn.Linear(d_hidden, d_in)                                       # W': (d_in, d_hidden)

    def encode(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.encoder(x))            # z = σ(W x + b)      (N, d_hidden)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z))            # x' = σ(W' z + c)    (N, d_in)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))               # DECODER(ENCODER(x)) (N, d_in)


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """The indices 0..n-1 in a random order drawn from ``generator``, cut into batches (last one shorter)."""
    order = torch.randperm(n, generator=generator)
    return iter(order.split(batch_size))


def train_autoencoder(layer: AutoencoderLayer, x: Tensor, *, epochs: int, lr: float, batch_size: int,
                      generator: torch.Generator, loss_fn: Callable[[Tensor, Tensor], Tensor] = reconstruction_loss,
                      params: list[nn.Parameter] | None = None,
                      on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Minibatch SGD on the reconstruction loss, with x as both input and output.

    Inputs:
      layer: the autoencoder; x: (N, d_in) the (unlabeled) training inputs.
      loss_fn(x, x_hat): the reconstruction loss (the student's function in the notebook).
      params: the parameters SGD updates (default: all of ``layer``'s).
      on_epoch(epoch, mean_loss): called after each epoch (e.g. to log to W&B).
    Returns: the mean training loss of each epoch (a list of ``epochs`` floats).
    """
    params = list(layer.parameters()) if params is None else params
    opt = torch.optim.SGD(params, lr=lr)
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in minibatches(len(x), batch_size, generator):
            loss = loss_fn(x[idx], layer(x[idx]))        # ||x − DECODER(ENCODER(x))||², batch mean
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        history.append(total / count)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history
