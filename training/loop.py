"""One training loop for the torch models: mini-batches, a learning-rate schedule, early stopping on validation
loss, the best weights kept (and checkpointed when asked), one progress line per epoch with its time and an ETA
(and a bar over the epoch's batches on a terminal)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .progress import Eta, bar, log, seconds

LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def fit(model: nn.Module, loss_fn: LossFn, train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...], *,
        epochs: int = 30, lr: float = 3e-3, batch_size: int = 256, patience: int = 5, seed: int = 0,
        checkpoint: Path | None = None, name: str = "model") -> dict[str, float]:
    """Train in place; the model ends with the weights of its best validation epoch. Returns a summary."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, patience // 2))
    best, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    n = train[0].shape[0]
    started = time.monotonic()
    eta = Eta(epochs)
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        batches = torch.randperm(n, generator=gen).split(batch_size)
        for idx in bar(batches, total=len(batches), desc=f"[{name}] epoch {epoch}/{epochs}", unit="batch"):
            opt.zero_grad()
            loss = loss_fn(model, tuple(t[idx] for t in train))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * idx.numel()
        val_loss = evaluate(model, loss_fn, val)
        sched.step(val_loss)
        improved = val_loss < best - 1e-6
        took, left = eta.step()
        # The ETA assumes every epoch runs: early stopping can only make it shorter.
        log(f"[{name}] epoch {epoch:3d}/{epochs}  train {total / n:.5f}  val {val_loss:.5f}  "
            f"lr {opt.param_groups[0]['lr']:.1e}  {seconds(took)}/epoch  eta {seconds(left)}"
            f"{'  *' if improved else ''}")
        if improved:
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
            if checkpoint is not None:
                torch.save(best_state, checkpoint)
        else:
            stale += 1
            if stale >= patience:
                log(f"[{name}] early stop: no improvement in {patience} epochs")
                break
    model.load_state_dict(best_state)
    model.eval()
    return {"epochs": epoch, "best_val_loss": best, "seconds": round(time.monotonic() - started, 1)}


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, data: tuple[torch.Tensor, ...], batch_size: int = 4096) -> float:
    model.eval()
    n = data[0].shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        part = tuple(t[start:start + batch_size] for t in data)
        total += loss_fn(model, part).item() * part[0].shape[0]
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor | tuple[torch.Tensor, ...]:
    model.eval()
    outs = [model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)
