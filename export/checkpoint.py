"""A checkpoint is the weights plus the hyperparameters that rebuild the network."""

from __future__ import annotations

from pathlib import Path

import torch

from export.hyperparameters import Hyperparameters
from export.network import Object2Vec

# 2: hcnn layers after the first became residual. A format-1 hcnn checkpoint would load without
# error and answer differently, so it is refused instead.
FORMAT = 2


def save(model: Object2Vec, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format": FORMAT, "hyperparameters": model.hp.to_dict(), "state_dict": model.state_dict()},
        path,
    )


def load(path: Path) -> Object2Vec:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    values = {k: v for k, v in saved["hyperparameters"].items() if v != ""}
    # Pretrained files were consumed at training time; the weights carry them now.
    for side in ("enc0", "enc1"):
        values.pop(f"{side}_pretrained_embedding_file", None)
        values.pop(f"{side}_vocab_file", None)
    hp = Hyperparameters.from_dict(values)
    if saved.get("format", 1) < 2 and "hcnn" in (hp.encoder(0).network, hp.encoder(1).network):
        raise ValueError(
            f"{path}: an hcnn checkpoint from before hcnn layers became residual (format 1); "
            "this version would compute other answers from its weights: retrain it"
        )
    model = Object2Vec(hp)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
