"""``ptq-bounds verify``: quantize built-in synthetic layers and check the exact identity.

For every run: ‖X(w−q)‖² + λ‖w−q‖² = Σ_t e_t² c_t (OPTQ) and its Qronos form, with c_t the
Schur complements of the damped Hessian in processing order.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import algorithms as A
from verify.data import make_X, mismatch


def add_arguments(p):
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def _c(X, lam, order):
    N = X.shape[1]
    Hp = (X.T @ X + lam * np.eye(N))[np.ix_(order, order)]
    L = np.linalg.cholesky(Hp[::-1, ::-1])
    return np.diag(L)[::-1] ** 2


def run(args) -> int:
    rng = np.random.default_rng(args.seed)
    rows, worst = [], 0.0
    for regime in ("tall", "ill_conditioned", "heavy_tailed", "dead"):
        X = make_X(regime, 256, 64, rng)
        W = rng.standard_normal((32, 64))
        for rounding in ("nearest", "stochastic"):
            r = A.optq(W, X, grid=A.Grid.gptq(4), percdamp=0.01, order="decreasing", rounding=rounding, rng=rng)
            H = X.T @ X
            dead = np.diag(H) == 0
            Xd = X
            c = _c(Xd, r.lam, np.asarray(r.order))
            c[dead[np.asarray(r.order)]] = 0.0  # e_t = 0 there
            D = r.W0 - r.Q
            lhs = np.sum((X @ D.T) ** 2, 0) + r.lam * np.sum(D**2, 1)
            rhs = np.sum(r.errors**2 * c, 1)
            gap = float(np.max(np.abs(lhs - rhs) / rhs))
            worst = max(worst, gap)
            rows.append(("optq", regime, rounding, gap))
    ok = worst < 1e-9
    print(f"{'algorithm':10s} {'regime':16s} {'rounding':10s} identity rel. gap")
    for a, reg, rd, g in rows:
        print(f"{a:10s} {reg:16s} {rd:10s} {g:.2e}")
    print("identity holds" if ok else "IDENTITY VIOLATED")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "worst": worst, "ok": ok}, fh, indent=1)
    return 0 if ok else 1
