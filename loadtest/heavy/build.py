"""Benchmark models of real size, made from fixed seeds and imported the way a user's model is.

    python -m loadtest.heavy.build             # make heavy-models: build what the store lacks
    python -m loadtest.heavy.build --force     # rebuild all of them

| tag                   | model                                                                  | file                         |
|-----------------------|------------------------------------------------------------------------|------------------------------|
| heavy-resnet-onnx:v1  | transformers `ResNetConfig()` (ResNet-50's layout), 1000-class head    | ONNX, dynamic batch          |
| heavy-resnet-torch:v1 | the same network                                                       | TorchScript + model.yaml     |
| heavy-bert-onnx:v1    | `BertModel(BertConfig())` (BERT-base), its pooled output               | ONNX, dynamic batch and      |
|                       | + a WordPiece vocabulary trained here on the Python standard library   | sequence; strings in         |
| heavy-trees-xgb:v1    | 500 XGBoost trees of depth 6 on 64 synthetic features                  | XGBoost JSON                 |

Weights are random from fixed seeds: no hub download is possible here, and random weights cost the
same compute. The networks come from transformers' own architecture definitions (not torchvision,
whose PyPI wheels replace the pinned CPU torch). Each model is written to a folder with a
`model.yaml` where the file cannot say everything, then imported with `models.importer.import_model`
(the probe load, checks and metadata of a user's deploy; `source.origin: heavy`). The text model
serves strings: its model.yaml declares the tokenizer (`models.tokenize`), a JSON file that loads
without running code, so the ONNX model needs no opt-in. TorchScript can run code when loaded; the
operator builds these files, so that format is allowed for them.

The test suite builds the same models at `TINY` size (a few layers, 20 trees) with this code.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models import store
from models.importer import ImportOptions, import_model
from models.settings import ImportSettings

IMAGE = (3, 224, 224)
"""The input size of the vision models (ImageNet's)."""
TEXT_MAX_LENGTH = 128
"""Longest text the text model takes, in tokens; longer texts are truncated."""
FEATURES = 64


@dataclass(frozen=True)
class Size:
    """How big each heavy model is built: `FULL` for the benchmark, `TINY` for the tests."""

    version: str
    resnet: dict[str, Any]
    bert: dict[str, Any]
    vocab_size: int
    corpus_bytes: int
    trees: int
    tree_rows: int
    image: tuple[int, int, int] = IMAGE


FULL = Size("v1", resnet={"num_labels": 1000}, bert={}, vocab_size=30522, corpus_bytes=4_000_000, trees=500,
            tree_rows=20_000)
TINY = Size("tiny", resnet={"embedding_size": 8, "hidden_sizes": [8, 16, 16, 16], "depths": [1, 1, 1, 1], "num_labels": 10},
            bert={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                  "vocab_size": 1000},
            vocab_size=1000, corpus_bytes=200_000, trees=20, tree_rows=2_000, image=(3, 64, 64))
SEED = 28


def resnet(size: Size) -> Any:
    """transformers' ResNet (ResNet-50 by default), random weights from the seed, returning its logits."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(SEED)
    net = ResNetForImageClassification(ResNetConfig(**size.resnet)).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.net(pixel_values=pixels).logits

    return Logits().eval()


def bert(size: Size) -> Any:
    """transformers' BertModel (BERT-base by default), random weights from the seed, returning its pooled output."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    # eager attention: the ONNX exporter traces it into plain MatMul/Softmax, which onnxruntime fuses itself
    net = BertModel(BertConfig(**size.bert, attn_implementation="eager"), add_pooling_layer=True).eval()

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.net(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    return Embedding().eval()


def corpus(limit: int) -> list[str]:
    """Local English-and-code text: the Python standard library's top-level modules, in name order."""
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(errors="replace")
        texts.append(text)
        total += len(text)
        if total >= limit:
            break
    return texts


def train_tokenizer(size: Size, target: Path) -> Any:
    """A lower-cased WordPiece vocabulary (BERT's scheme) trained on `corpus`, saved as tokenizers JSON."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=size.vocab_size, special_tokens=special, show_progress=False)
    tokenizer.train_from_iterator(corpus(size.corpus_bytes), trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    tokenizer.enable_truncation(TEXT_MAX_LENGTH)
    tokenizer.save(str(target))
    return tokenizer


def _export_onnx(module: Any, args: tuple, path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict[str, dict[int, str]]) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          dynamo=False, do_constant_folding=True)


def _write_yaml(folder: Path, declared: dict[str, Any]) -> None:
    (folder / "model.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))


def _image_decl(size: Size, classes: int) -> dict[str, Any]:
    return {"task": "classification", "softmax": True,
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, *size.image]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, classes]}]}


def build_resnet_onnx(size: Size, folder: Path) -> dict[str, Any]:
    import torch

    module = resnet(size)
    _export_onnx(module, (torch.zeros(2, *size.image),), folder / "model.onnx", ["pixels"], ["logits"],
                 {"pixels": {0: "batch"}, "logits": {0: "batch"}})
    _write_yaml(folder, _image_decl(size, size.resnet["num_labels"]))
    return {"architecture": "transformers.ResNetForImageClassification", "parameters": _parameters(module)}


def build_resnet_torch(size: Size, folder: Path) -> dict[str, Any]:
    import torch

    module = resnet(size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the channel check is constant here
        traced = torch.jit.trace(module, (torch.zeros(2, *size.image),), check_trace=False)
    traced.save(str(folder / "model.pt"))
    _write_yaml(folder, _image_decl(size, size.resnet["num_labels"]))
    return {"architecture": "transformers.ResNetForImageClassification", "parameters": _parameters(module)}


def build_bert_onnx(size: Size, folder: Path) -> dict[str, Any]:
    import torch

    train_tokenizer(size, folder / "tokenizer.json")
    module = bert(size)
    ids = torch.ones(2, 16, dtype=torch.int64)
    _export_onnx(module, (ids, torch.ones_like(ids)), folder / "model.onnx", ["input_ids", "attention_mask"],
                 ["embedding"], {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                                 "embedding": {0: "batch"}})
    _write_yaml(folder, {"task": "tensors",
                         "tokenizer": {"file": "tokenizer.json", "input": "text", "max_length": TEXT_MAX_LENGTH}})
    return {"architecture": "transformers.BertModel (pooled output)", "parameters": _parameters(module)}


def tree_data(size: Size) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(size.tree_rows, FEATURES, n_informative=24, random_state=SEED)
    return x.astype(np.float32), y


def build_trees_xgb(size: Size, folder: Path) -> dict[str, Any]:
    import xgboost as xgb

    x, y = tree_data(size)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.05, "tree_method": "hist",
                         "nthread": 2, "seed": SEED}, xgb.DMatrix(x, y), num_boost_round=size.trees)
    booster.save_model(str(folder / "model.json"))
    return {"trees": size.trees, "max_depth": 6}


def _parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


BUILDERS: dict[str, Callable[[Size, Path], dict[str, Any]]] = {
    "heavy-resnet-onnx": build_resnet_onnx,
    "heavy-resnet-torch": build_resnet_torch,
    "heavy-bert-onnx": build_bert_onnx,
    "heavy-trees-xgb": build_trees_xgb,
}


def build_all(size: Size = FULL, force: bool = False, only: list[str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, float]:
    """Build and import each heavy model the store lacks; returns tag -> seconds taken (build and import)."""
    import torch

    torch.manual_seed(SEED)
    settings = ImportSettings(allow_code_formats=True)
    done: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rtserve-heavy-") as tmp:
        for name, builder in BUILDERS.items():
            tag = f"{name}:{size.version}"
            if only and name not in only:
                continue
            if store.exists(tag):
                if not force:
                    log(f"{tag:<28} already in the store, skipped")
                    continue
                store.delete(tag)
            start = time.perf_counter()
            folder = Path(tmp) / name
            folder.mkdir()
            extra = builder(size, folder)
            model = import_model(name, size.version, folder,
                                 ImportOptions(allow_code=True, origin="heavy", metadata={**extra, "seed": SEED}), settings)
            done[tag] = time.perf_counter() - start
            megabytes = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            log(f"{tag:<28} {megabytes:7.1f} MB, probe {model.info.metadata.get('memory_mb')} MB  ({done[tag]:.1f} s)")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    parser.add_argument("--only", action="append", choices=sorted(BUILDERS), help="build only this model (repeatable)")
    parser.add_argument("--tiny", action="store_true", help="the test suite's stand-ins (version tiny), in seconds")
    args = parser.parse_args(argv)
    from loadtest.servers import use_project_store

    use_project_store()
    build_all(TINY if args.tiny else FULL, args.force, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
