"""Streaming calibration (verify.stream): Gram matrices accumulated over row chunks, their square
root, and the claims they decide, against the in-memory path on the same data."""

from __future__ import annotations

import numpy as np
import pytest

import algorithms as A
import theory
from verify.stream import (
    ROW_CLAIMS,
    GramAccumulator,
    Grams,
    check_streamed,
    chunks_of,
    is_row_claim,
    square_root,
)


def layer(seed, m=900, N=20, n=5, dead=(), rank=None, mismatch=0.05):
    rng = np.random.default_rng(seed)
    r = rank or N
    X = rng.standard_normal((m, r)) @ rng.standard_normal((r, N)) * 0.3
    Xt = X + mismatch * rng.standard_normal((m, N))
    for j in dead:
        X[:, j] = 0
        Xt[:, j] = 0
    W = rng.standard_normal((n, N)) * 0.1
    return W, X, Xt


def grams_of(X, Xt=None, rows=256):
    acc = GramAccumulator(X.shape[1], mismatch=Xt is not None)
    for a, b in chunks_of(X, Xt, rows):
        acc.add(a, b)
    return acc.result()


@pytest.mark.parametrize("case", ["full", "dead", "rank_deficient", "wide"])
@pytest.mark.parametrize("mismatch", [False, True])
def test_square_root_reproduces_every_inner_product(case, mismatch):
    kw = {"full": {}, "dead": {"dead": (0, 7)}, "rank_deficient": {"rank": 6}, "wide": {"m": 12}}[case]
    W, X, Xt = layer(1, **kw)
    g = grams_of(X, Xt if mismatch else None, rows=5)
    assert g.m == X.shape[0]
    Xs, Xts = square_root(g)
    scale = np.abs(X.T @ X).max()
    assert Xs.shape[0] <= (2 if mismatch else 1) * X.shape[1]
    np.testing.assert_allclose(Xs.T @ Xs, X.T @ X, atol=1e-12 * scale)
    for j in kw.get("dead", ()):
        assert np.all(Xs[:, j] == 0)
    if mismatch:
        np.testing.assert_allclose(Xts.T @ Xts, Xt.T @ Xt, atol=1e-12 * scale)
        np.testing.assert_allclose(Xts.T @ Xs, Xt.T @ X, atol=1e-12 * scale)
    else:
        assert Xts is None


def _compare(v_mem, v_str, *, ratios_of_rank=True):
    """Same status and worst ratio (to 1e-7) for every claim and hypothesis but the row claims.
    hyp.record's ratio is not compared (its precision tolerance scales with the number of rows it
    is evaluated on), nor, with ``ratios_of_rank=False`` (rank-deficient X), T1.explicit's: its
    ĉ_t depends on the numerical rank of X_{>t}, which a Gram matrix resolves only to √ε·σ_max
    (any rank gives a valid bound; the verdict is still compared)."""
    bad = []
    no_ratio = {"hyp.record"} | (set() if ratios_of_rank else {"T1.explicit"})
    for k, a in v_mem.items():
        if is_row_claim(k):
            continue
        a, b = a.to_dict(), v_str[k].to_dict()
        ra, rb = (None, None) if k in no_ratio else (a["worst_ratio"], b["worst_ratio"])
        if a["status"] != b["status"] or (ra is None) != (rb is None) or (
                ra is not None and abs(ra - rb) > 1e-7 * max(1.0, abs(ra))):
            bad.append((k, a["status"], b["status"], ra, rb))
    return bad


@pytest.mark.parametrize("seed,kw", [(2, {}), (3, {"dead": (4,)}), (4, {"rank": 8}), (5, {"m": 15})])
def test_streamed_runs_and_verdicts_equal_the_in_memory_ones(seed, kw):
    """OPTQ on X, OPTQ on X̃ and both Qronos variants from the Gram matrices: the same Q (to the
    rare rounding flip a different summation order may cause) and the same verdicts."""
    W, X, Xt = layer(seed, **kw)
    g = grams_of(X, Xt)
    Xs, Xts = square_root(g)
    qkw = dict(grid=A.Grid.gptq(4), percdamp=0.01)
    # the runs of check-layer, with the extras it gives theory.Run
    plans = [(lambda D, Dt, s: A.optq(W, D, samples=s, **qkw), lambda D, Dt: {}),
             (lambda D, Dt, s: A.optq(W, Dt, samples=s, **qkw), lambda D, Dt: {"X_tilde": Dt}),
             (lambda D, Dt, s: A.qronos(W, D, Dt, variant="projection", samples=s, **qkw),
              lambda D, Dt: {"X_tilde": Dt, "W": W}),
             (lambda D, Dt, s: A.qronos(W, D, Dt, variant="original", samples=s, **qkw),
              lambda D, Dt: {"X_tilde": Dt, "W": W})]
    for quantize, extra in plans:
        r_mem, r_str = quantize(X, Xt, None), quantize(Xs, Xts, g.m)
        assert r_mem.lam == pytest.approx(r_str.lam, rel=1e-12) and r_str.m == r_mem.m
        assert np.mean(np.asarray(r_mem.Q) == np.asarray(r_str.Q)) >= 0.99
        if not np.array_equal(r_mem.Q, r_str.Q):
            continue  # a flipped rounding decision changes everything after it: nothing to compare
        kx, ks = extra(X, Xt), extra(Xs, Xts)
        v_mem = theory.check_all(theory.Run.from_result(r_mem, X, **kx))
        v_str = theory.check_all(theory.Run.from_result(r_str, Xs, **ks))
        assert _compare(v_mem, v_str, ratios_of_rank=not ({"rank", "m"} & set(kw))) == []


def test_row_claims_are_the_ones_a_square_root_cannot_decide():
    """Stochastic OPTQ: the ℓ∞ claims (T2) read the sample rows, so their numbers change when X is
    replaced by its square root; every other claim's do not (so ROW_CLAIMS is the right list)."""
    W, X, _ = layer(6, m=400, N=12, n=1)
    Wr = np.tile(W, (300, 1))
    Xs, _ = square_root(grams_of(X))
    kw = dict(grid=A.Grid.integers(0.05), lam=0.5, rounding="stochastic")
    r_mem = A.optq(Wr, X, rng=np.random.default_rng(0), **kw)
    r_str = A.optq(Wr, Xs, rng=np.random.default_rng(0), **kw)
    assert np.array_equal(r_mem.Q, r_str.Q)
    v_mem = theory.check_all(theory.Run.from_result(r_mem, X))
    v_str = theory.check_all(theory.Run.from_result(r_str, Xs))
    assert _compare(v_mem, v_str) == []
    differ = {k for k, v in v_mem.items() if is_row_claim(k)
              and v.to_dict()["worst_ratio"] != v_str[k].to_dict()["worst_ratio"]}
    assert differ and all(k.startswith(ROW_CLAIMS) for k in differ)


def test_check_streamed_reports_every_run_and_leaves_out_the_row_claims():
    from verify.check import check_layer

    W, X, Xt = layer(7)
    rep = check_streamed(W, grams_of(X, Xt), grid=A.Grid.gptq(4))
    runs = {r.label: r.verdicts for r in rep.runs}
    assert list(runs) == ["optq", "optq on X_tilde", "qronos-projection", "qronos-original"]
    assert rep.shape == {"n": 5, "N": 20, "m": X.shape[0]} and "T2.tail" in rep.notes[0]
    for verdicts in runs.values():
        assert not any(is_row_claim(k) for k in verdicts)
    assert all(runs["optq"][c].status == "consistent" for c in ("I1", "T1.sum_c", "T1.frobenius"))
    assert runs["qronos-projection"]["T4.projection.identity"].status == "consistent"
    mem = check_layer(W, X, Xt, grid=A.Grid.gptq(4))
    assert rep.exit_code == mem.exit_code == 0
    assert rep.runs[0].error_fro == pytest.approx(mem.runs[0].error_fro, rel=1e-9)
    for a, b in zip(mem.runs, rep.runs):
        assert {k: v.status for k, v in a.verdicts.items() if not is_row_claim(k)} == \
            {k: v.status for k, v in b.verdicts.items()}


def test_gram_file_round_trip_and_check_layer_cli(tmp_path, capsys):
    from conftest import cli_code

    W, X, Xt = layer(9)
    g = grams_of(X, Xt)
    g.save(tmp_path / "g.npz")
    h = Grams.load(tmp_path / "g.npz")
    assert h.m == g.m and np.array_equal(h.H, g.H) and np.array_equal(h.G, g.G)
    np.save(tmp_path / "W.npy", W)
    assert cli_code(["check-layer", tmp_path / "W.npy", tmp_path / "g.npz", "--gram", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "judged from the Gram matrices of 900 calibration rows" in out and "qronos-original" in out
    np.savez(tmp_path / "bad.npz", H=np.eye(20))
    assert cli_code(["check-layer", tmp_path / "W.npy", tmp_path / "bad.npz", "--gram"]) == 2
    assert "a Gram file holds H and m" in capsys.readouterr().err
    assert cli_code(["check-layer", tmp_path / "W.npy", tmp_path / "g.npz", "--gram",
                     "--x-tilde", tmp_path / "W.npy"]) == 2


def test_accumulator_errors_name_the_argument():
    acc = GramAccumulator(4, mismatch=True)
    with pytest.raises(ValueError, match="X_tilde"):
        acc.add(np.ones((3, 4)))
    with pytest.raises(ValueError, match="m_c × N"):
        acc.add(np.ones((3, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.full((2, 4), np.nan), np.ones((2, 4)))
    with pytest.raises(ValueError, match="no rows"):
        GramAccumulator(4).result()
    with pytest.raises(ValueError, match="N must be"):
        GramAccumulator(0)
    with pytest.raises(TypeError, match="Grams"):
        check_streamed(np.ones((2, 4)), {"H": np.eye(4)}, grid=A.Grid.gptq(4))


def test_dask_chunks_give_the_same_bits():
    """The same row chunks reduced on a Dask scheduler or locally: bit-identical Gram matrices."""
    da = pytest.importorskip("dask.array")
    import dask

    W, X, Xt = layer(8, m=1000)
    local = GramAccumulator(X.shape[1], mismatch=True)
    for a, b in chunks_of(X, Xt, 128):
        local.add(a, b)
    dist = GramAccumulator(X.shape[1], mismatch=True)
    with dask.config.set(scheduler="threads"):
        dist.add_dask(da.from_array(X, chunks=(128, 7)), da.from_array(Xt, chunks=(128, 20)), batch=3)
    a, b = local.result(), dist.result()
    assert a.m == b.m == 1000
    for k in ("H", "H_tilde", "G"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert isinstance(a, Grams)


def test_default_campaign_cells_agree_streamed_and_in_memory():
    """A sample of the default campaign (one cell per family and algorithm): the verdicts of every
    claim the Gram matrices decide are the same in memory and from the Gram matrices (the whole
    campaign: results/stream-agreement.json, `python -m verify.stream agreement`)."""
    from verify.campaign import cell_seed
    from verify.campaigns import get_campaign
    from verify.stream import compare_cell

    camp = get_campaign("default")
    seen, picked = set(), []
    for c in camp.cells:
        k = (c.config.get("family"), c.config["algorithm"], c.config.get("rounding", "nearest"))
        if c.config["algorithm"] != "rtn" and k not in seen and c.config.get("n", 1) <= 64:
            seen.add(k)
            picked.append(c)
    assert len(picked) >= 10
    for c in picked:
        r = compare_cell(c.config, cell_seed(camp.seed, c.seed_key), alpha=camp.alpha_per_test, eta=camp.eta)
        assert r["memory"] == r["streamed"], c.key
        assert r["Q_entries_equal"] >= 0.9, c.key


def test_committed_agreement_is_complete():
    import json
    from pathlib import Path

    d = json.loads((Path(__file__).resolve().parent.parent / "results" / "stream-agreement.json").read_text())
    from verify.campaigns import get_campaign

    assert d["campaign"] == get_campaign("default").id
    assert d["cells"] == sum(c.config["algorithm"] != "rtn" for c in get_campaign("default").cells)
    assert d["verdicts"] > 20 * d["cells"] and d["differ"] == []


def test_committed_real_llm_agreement_has_no_differing_verdict():
    import json
    from pathlib import Path

    d = json.loads((Path(__file__).resolve().parent.parent / "results" / "stream-agreement-real-llm.json").read_text())
    assert d["campaign"].startswith("real-llm-") and d["cells"] >= 40
    assert d["verdicts"] > 10 * d["cells"] and d["differ"] == []


# ------------------------------------------------------------------------------------------------
# the second pass over the rows: the ℓ∞ claims (theory.SampleRows)
# ------------------------------------------------------------------------------------------------
class Rows:
    """A chunk source that counts its passes."""

    def __init__(self, X, Xt=None, rows=37):
        self.X, self.Xt, self.rows, self.passes = X, Xt, rows, 0

    def __call__(self):
        self.passes += 1
        return chunks_of(self.X, self.Xt, self.rows)


STOCHASTIC_PLANS = {
    "optq": (lambda W, D, Dt, kw: A.optq(W, D, **kw), lambda W, D, Dt: {}),
    "optq on X_tilde": (lambda W, D, Dt, kw: A.optq(W, Dt, **kw), lambda W, D, Dt: {"X_tilde": Dt}),
    "qronos-projection": (lambda W, D, Dt, kw: A.qronos(W, D, Dt, variant="projection", **kw),
                          lambda W, D, Dt: {"X_tilde": Dt, "W": W}),
    "qronos-original": (lambda W, D, Dt, kw: A.qronos(W, D, Dt, variant="original", **kw),
                        lambda W, D, Dt: {"X_tilde": Dt, "W": W}),
}


@pytest.mark.parametrize("plan", list(STOCHASTIC_PLANS))
@pytest.mark.parametrize("group", [None, 4])
def test_second_pass_judges_the_row_claims_as_in_memory(plan, group):
    """Stochastic rounding (the row claims' scope), per-row and group grids (one and three step
    classes): the same quantization judged in memory and on the square root with the rows read
    again in chunks: every claim and hypothesis has the same status and worst ratio (to 1e-9), the
    ℓ∞ claims included; two passes over the rows at most. (The same result is judged twice, so
    that a stochastic rounding flip between X and X' cannot hide a difference of the pass.)"""
    W, X, Xt = layer(6, m=400, N=12, n=1)
    Wr = np.tile(W, (300, 1))
    g = grams_of(X, Xt)
    Xs, Xts = square_root(g)
    quantize, extra = STOCHASTIC_PLANS[plan]
    kw = dict(grid=A.Grid.gptq(4, group_size=group, static_groups=group is not None), lam=0.5, rounding="stochastic")
    r_mem = r_str = quantize(Wr, X, Xt, dict(kw, rng=np.random.default_rng(0)))
    src = Rows(X, Xt)
    v_mem = theory.check_all(theory.Run.from_result(r_mem, X, **extra(Wr, X, Xt)))
    v_str = theory.check_all(theory.Run.from_result(r_str, Xs, **extra(Wr, Xs, Xts)),
                             sample_rows=theory.SampleRows(src, g.m))
    judged = [k for k, v in v_mem.items() if is_row_claim(k) and v.in_scope]
    assert judged and 1 <= src.passes <= 2
    bad = []
    for k, a in v_mem.items():
        a, b = a.to_dict(), v_str[k].to_dict()
        ra, rb = a["worst_ratio"], b["worst_ratio"]
        if a["status"] != b["status"] or (k != "hyp.record" and ra is not None and abs(ra - rb) > 1e-9 * max(1.0, abs(ra))):
            bad.append((k, a["status"], b["status"], ra, rb))
    assert bad == []


def test_second_pass_is_made_only_for_claims_in_scope():
    """Nearest rounding: no ℓ∞ claim is in scope, so the rows are never read again."""
    W, X, Xt = layer(7)
    src = Rows(X, Xt)
    rep = check_streamed(W, grams_of(X, Xt), grid=A.Grid.gptq(4), rows=src)
    assert src.passes == 0
    assert all("T2.tail" in r.verdicts and r.verdicts["T2.tail"].status == "out of scope" for r in rep.runs)
    assert "second pass" in rep.notes[0]


def test_check_streamed_with_rows_equals_check_layer_stochastic():
    """check_streamed(rows=…) and check_layer in memory, stochastic rounding with trials: the same
    status for every claim, the ℓ∞ claims included."""
    from verify.check import check_layer

    W, X, Xt = layer(11, m=300, N=10, n=2)
    kw = dict(grid=A.Grid.gptq(4), lam=0.3, rounding="stochastic", trials=150, seed=3)
    rep = check_streamed(W, grams_of(X, Xt), rows=Rows(X, Xt, 64), **kw)
    mem = check_layer(W, X, Xt, **kw)
    assert [r.label for r in rep.runs] == [r.label for r in mem.runs]
    for a, b in zip(mem.runs, rep.runs):
        assert {k: v.status for k, v in a.verdicts.items()} == {k: v.status for k, v in b.verdicts.items()}, a.label
        assert any(is_row_claim(k) and v.in_scope for k, v in b.verdicts.items()), a.label


def test_sample_rows_errors_name_the_problem():
    W, X, Xt = layer(12, m=200, N=8, n=1)
    g = grams_of(X, Xt)
    kw = dict(grid=A.Grid.gptq(4), lam=0.3, rounding="stochastic", trials=20)
    with pytest.raises(ValueError, match="the chunks gave 100 rows"):
        check_streamed(W, g, rows=lambda: chunks_of(X[:100], Xt[:100]), **kw)
    with pytest.raises(ValueError, match="gives no X_tilde"):
        check_streamed(W, g, rows=lambda: chunks_of(X), **kw)
    with pytest.raises(ValueError, match="expected m_c × 8"):
        check_streamed(W, g, rows=lambda: chunks_of(X[:, :5], Xt[:, :5]), **kw)
    with pytest.raises(TypeError, match="callable"):
        theory.SampleRows([(X, Xt)], 200)
    with pytest.raises(ValueError, match="number of calibration rows"):
        theory.SampleRows(lambda: chunks_of(X), 0)
    with pytest.raises(ValueError, match="400 rows declared"):
        check_streamed(W, g, rows=theory.SampleRows(lambda: chunks_of(X, Xt), 400), **kw)


def test_distributed_cluster_gives_the_same_grams_and_verdicts():
    """A distributed cluster (scheduler and two worker processes, over TCP): the chunk products are
    computed on the workers, the Gram matrices are bit-identical to local accumulation, and
    default-campaign cells streamed through the cluster give the same Q and verdicts as streamed
    locally."""
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    from verify.campaign import cell_seed
    from verify.campaigns import get_campaign
    from verify.stream import compare_cell

    W, X, Xt = layer(13, m=1000)
    local = grams_of(X, Xt, rows=100)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        acc = GramAccumulator(X.shape[1], mismatch=True)
        with distributed.get_task_stream(client) as stream:
            acc.add_dask(da.from_array(X, chunks=(100, 20)), da.from_array(Xt, chunks=(100, 20)), batch=3)
        done = [t for t in stream.data if "chunk_products" in str(t["key"])]
        client_workers = list(client.scheduler_info()["workers"])
        camp = get_campaign("default")
        cells = [c for c in camp.cells if c.config["algorithm"] != "rtn" and c.config.get("n", 1) <= 64][:: 37][:4]
        via = [compare_cell(c.config, cell_seed(camp.seed, c.seed_key), alpha=camp.alpha_per_test, eta=camp.eta,
                            dask=True) for c in cells]
    g = acc.result()
    assert g.m == local.m == 1000
    for k in ("H", "H_tilde", "G"):
        assert np.array_equal(getattr(g, k), getattr(local, k)), k
    assert len(done) == 10 and {t["worker"] for t in done} <= set(client_workers)
    for c, r in zip(cells, via):
        here = compare_cell(c.config, cell_seed(camp.seed, c.seed_key), alpha=camp.alpha_per_test, eta=camp.eta)
        assert r["streamed"] == here["streamed"] and r["Q_entries_equal"] == here["Q_entries_equal"], c.key
