"""Smoke check and timings: ``python -m verify.llm [--model smollm2-135m] [--n-tokens 2048]``.

Prints the config, the greedy continuation of "The capital of France is",
the perplexity on the calibration text, the capture time of all linear
layers and per-layer input statistics (cond(X^T X), dead columns, outliers).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m verify.llm", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--source", default="licenses")
    ap.add_argument("--n-tokens", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--stats", default="*.ffn_down", help="layers to print statistics for ('all' or a selection)")
    ap.add_argument("--float64", action="store_true")
    a = ap.parse_args(argv)

    from .capture import capture_inputs
    from .forward import greedy_generate, perplexity
    from .gguf_model import load_model
    from .stats import layer_stats
    from .textsource import calibration_tokens

    t0 = time.perf_counter()
    m = load_model(a.model, np.float64 if a.float64 else np.float32)
    print(f"loaded {m.path} in {time.perf_counter() - t0:.1f}s (sha256 {m.sha256[:16]}...)")
    print(m.config)
    text, _ = greedy_generate(m, "The capital of France is", 4)
    print(f"greedy: 'The capital of France is' -> {text!r}")
    ct = calibration_tokens(m, a.source, a.n_tokens, a.seq_len)
    md = ct.metadata()
    print(
        f"text: {md['text_source']} ({len(md['text_files'])} files, {md['text_chars']} chars, "
        f"sha256 {md['text_sha256'][:16]}...), {ct.tokens.shape[0]} x {ct.seq_len} tokens, add_bos={ct.add_bos}"
    )
    t0 = time.perf_counter()
    ppl, nll, n = perplexity(m, ct.tokens)
    print(f"perplexity {ppl:.3f} (mean NLL {nll:.4f} over {n} predictions) in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    X = capture_inputs(m, ct)
    dt = time.perf_counter() - t0
    print(f"captured {len(X)} layers in {dt:.1f}s ({dt / m.config.n_layers:.3f}s per block)")
    names = list(X) if a.stats == "all" else [l.name for l in m.resolve_layers(a.stats.split(","))]
    print(f"{'layer':<20}{'store':>6}{'cond':>11}{'rank':>11}{'dead':>6}{'max/med':>10}{'colmax':>9}")
    for nm in names:
        s = layer_stats(X[nm])
        print(
            f"{nm:<20}{m.layer(nm).storage_type:>6}{s['cond']:>11.3g}{s['numerical_rank']:>6}/{s['n']:<5}"
            f"{s['dead_columns']:>5}{s['outlier_ratio']:>10.1f}{s['col_outlier_ratio']:>9.1f}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
