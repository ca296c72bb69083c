"""The torch modules. Small on purpose: each answers in well under a millisecond on one CPU core."""

from __future__ import annotations

import torch
from torch import nn


class BandwidthLSTM(nn.Module):
    """A window of link features [B, W, F] -> the next sample's scaled targets [B, T].

    The targets are scaled exactly as the first T features, so the network predicts the change from the last
    sample (a residual): "no change" is its starting point, the last-value baseline it has to beat."""

    def __init__(self, n_features: int, n_targets: int = 4, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.n_targets = n_targets
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True, dropout=0.1)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_targets))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return x[:, -1, : self.n_targets] + self.head(out[:, -1])


class CompressionMLP(nn.Module):
    """Link and payload features [B, F] -> logits over the compression choices [B, C]; exported with softmax."""

    def __init__(self, n_features: int, n_choices: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_choices))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Probabilities(nn.Module):
    """Wraps a classifier so the exported graph returns probabilities."""

    def __init__(self, logits: nn.Module):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


class LSTMAutoencoder(nn.Module):
    """A window [B, W, F] -> its reconstruction [B, W, F], through a bottleneck of `latent` units."""

    def __init__(self, n_features: int, hidden: int = 32, latent: int = 8):
        super().__init__()
        self.encoder = nn.LSTM(n_features, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.decoder = nn.LSTM(latent, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        z = self.to_latent(h[-1])
        z = z.unsqueeze(1).expand(-1, x.shape[1], -1)
        dec, _ = self.decoder(z)
        return self.out(dec)


class ReconstructionErrors(nn.Module):
    """Wraps an autoencoder so the exported graph returns what the detector decides on: per-feature mean
    squared errors over the window, each divided by that feature's mean error on normal training windows
    [B, F], and their mean, the score [B]. Normalising keeps a feature that is hard to reconstruct even when
    normal (rare leader changes) from drowning one that is easy (latency) when it goes wrong."""

    def __init__(self, autoencoder: nn.Module, normal_error: torch.Tensor | None = None):
        super().__init__()
        self.autoencoder = autoencoder
        n = autoencoder.out.out_features
        self.register_buffer("normal_error", torch.ones(n) if normal_error is None else normal_error.clone())

    def raw_errors(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.autoencoder(x)) ** 2).mean(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        err = self.raw_errors(x) / self.normal_error
        return err.mean(dim=1), err
