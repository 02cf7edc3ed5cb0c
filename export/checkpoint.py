"""A checkpoint is the weights plus the hyperparameters that rebuild the network."""

from __future__ import annotations

from pathlib import Path

import torch

from export.hyperparameters import Hyperparameters
from export.network import Object2Vec


def save(model: Object2Vec, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyperparameters": model.hp.to_dict(), "state_dict": model.state_dict()}, path)


def load(path: Path) -> Object2Vec:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    values = {k: v for k, v in saved["hyperparameters"].items() if v != ""}
    # Pretrained files were consumed at training time; the weights carry them now.
    for side in ("enc0", "enc1"):
        values.pop(f"{side}_pretrained_embedding_file", None)
        values.pop(f"{side}_vocab_file", None)
    model = Object2Vec(Hyperparameters.from_dict(values))
    model.load_state_dict(saved["state_dict"])
    return model.eval()
