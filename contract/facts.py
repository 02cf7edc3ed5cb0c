"""The facts about an exported model that the server needs.

Export writes `facts.json` once into the model repository; the config generator and the front
door read it, so no dimension is written down twice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

FACTS_FILE = "facts.json"


@dataclass(frozen=True)
class Facts:
    vocab_sizes: tuple[int, int]
    max_seq_lens: tuple[int, int]
    enc_dim: int
    output_layer: str  # softmax | mean_squared_error
    output_dim: int  # num_classes for softmax, 1 for regression

    def save(self, repository: Path) -> Path:
        path = Path(repository) / FACTS_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, repository: Path) -> Facts:
        path = Path(repository) / FACTS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: export a model first (python -m export.onnx_export ...)"
            )
        raw = json.loads(path.read_text())
        return cls(
            vocab_sizes=tuple(raw["vocab_sizes"]),
            max_seq_lens=tuple(raw["max_seq_lens"]),
            enc_dim=int(raw["enc_dim"]),
            output_layer=raw["output_layer"],
            output_dim=int(raw["output_dim"]),
        )
