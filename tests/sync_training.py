"""The training smoke tests of zcoll.sync (tests/test_sync_*.py): scikit-learn's digits, a small
MLP, each rank its own shard of the training set in a fixed order, accuracy on the held-out
quarter. Everything is seeded, so a run is the same every time."""
from __future__ import annotations

import numpy as np
import torch


def digits(seed: int = 0):
    """(x_train, y_train, x_test, y_test) as torch tensors: 1797 8x8 images, a fixed stratified
    75/25 split, features standardised on the training part."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x.astype(np.float32), y, test_size=0.25,
                                                        random_state=seed, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-3  # some border pixels are always 0
    return (torch.from_numpy((x_train - mean) / std), torch.from_numpy(y_train).long(),
            torch.from_numpy((x_test - mean) / std), torch.from_numpy(y_test).long())


def mlp(seed: int = 0, hidden: int = 64) -> torch.nn.Module:
    """The same initial weights on every rank (the seed)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def shard(x: torch.Tensor, y: torch.Tensor, rank: int, world: int):
    return x[rank::world], y[rank::world]


def batch(x: torch.Tensor, y: torch.Tensor, step: int, size: int = 32, seed: int = 0):
    """The step's minibatch: a fixed permutation per epoch of this shard."""
    n = x.shape[0]
    per_epoch = max(1, n // size)
    epoch, i = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    idx = order[i * size:(i + 1) * size]
    return x[idx], y[idx]


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x), y)
