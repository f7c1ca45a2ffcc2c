"""Optimal multi-draft acceptance ("Towards Optimal Multi-draft Speculative Decoding"), exactly, for small vocabularies.

Setting: at one position the drafter proposes n tokens (i.i.d. from q, or without replacement), the target's law is p.
Any lossless verifier is a coupling of the draft tuple and the output token Y ~ p; it accepts when Y is one of the
drafts. The best possible acceptance rate is

    α* = max over couplings P(Y ∈ drafts)                        (a transport linear program, ``alpha_star_lp``)
       = 1 − max_{A ⊆ V} [ Q(every draft ∈ A) − p(A) ]             (its dual, by max-flow/min-cut, ``alpha_star_dual``)

with Q(every draft ∈ A) = q(A)^n with replacement. n = 1 gives Σ min(p, q). ``rrs_acceptance`` and
``rsd_acceptance`` give the exact acceptance rates of recursive rejection sampling (drafts i.i.d.) and of its
without-replacement variant, which never exceed α*.
"""

from __future__ import annotations

import itertools

import numpy as np

from core.errors import DraftScopeError

MAX_VOCAB = 16  # the exact forms enumerate subsets (2^V) or ordered draft tuples (V^n)


def _check(p, q, n: int) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.ndim != 1 or p.shape != q.shape:
        raise DraftScopeError(f"p and q must be vectors of the same length (got {p.shape} and {q.shape})")
    if len(p) > MAX_VOCAB:
        raise DraftScopeError(f"exact forms enumerate the vocabulary: at most {MAX_VOCAB} tokens (truncate to top-k)")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise DraftScopeError("p and q must be non-negative with a positive sum")
    if not 1 <= n <= 8:
        raise DraftScopeError(f"number of drafts must be in 1..8, got {n}")
    return p / p.sum(), q / q.sum()


def draft_tuples(q: np.ndarray, n: int, without_replacement: bool) -> list[tuple[tuple[int, ...], float]]:
    """Every ordered draft tuple with its probability: i.i.d. from q, or drawn one by one from q renormalised over
    the tokens not drawn yet (tuples that cannot occur are left out)."""
    if without_replacement and n > int((q > 0).sum()):
        raise DraftScopeError(f"{n} distinct drafts need at least {n} tokens with q > 0")
    tuples = []
    for t in itertools.product(range(len(q)), repeat=n):
        prob, used = 1.0, 0.0
        for j, x in enumerate(t):
            if without_replacement:
                if x in t[:j] or used >= 1.0 - 1e-15:
                    prob = 0.0
                    break
                prob *= q[x] / (1.0 - used)
                used += q[x]
            else:
                prob *= q[x]
        if prob > 0:
            tuples.append((t, prob))
    return tuples


def alpha_star_lp(p, q, n: int, without_replacement: bool = False) -> float:
    """α* as the transport LP over (draft tuple, output token) pairs, solved by scipy's HiGHS."""
    from scipy.optimize import linprog

    p, q = _check(p, q, n)
    tuples = draft_tuples(q, n, without_replacement)
    v, m = len(p), len(tuples)
    # variable π[t, y], flattened t-major; maximise Σ π[t, y]·[y ∈ t]
    gain = np.array([float(y in t) for t, _ in tuples for y in range(v)])
    rows_tuple = np.kron(np.eye(m), np.ones((1, v)))  # Σ_y π[t, y] = Q(t)
    rows_token = np.kron(np.ones((1, m)), np.eye(v))  # Σ_t π[t, y] = p(y)
    result = linprog(-gain, A_eq=np.vstack([rows_tuple, rows_token]),
                     b_eq=np.concatenate([[prob for _, prob in tuples], p]), bounds=(0, None), method="highs")
    if not result.success:
        raise DraftScopeError(f"the LP solver failed: {result.message}")
    return float(-result.fun)


def alpha_star_dual(p, q, n: int, without_replacement: bool = False) -> float:
    """α* = 1 − max_A [Q(every draft ∈ A) − p(A)], by enumerating the subsets A of the vocabulary."""
    p, q = _check(p, q, n)
    v = len(p)
    if not without_replacement:
        best = 0.0  # A = ∅ gives 0
        for mask in range(1, 1 << v):
            members = [i for i in range(v) if mask >> i & 1]
            best = max(best, q[members].sum() ** n - p[members].sum())
        return 1.0 - best
    tuples = draft_tuples(q, n, True)
    set_masks = [sum(1 << x for x in t) for t, _ in tuples]
    probs = np.array([prob for _, prob in tuples])
    best = 0.0
    for mask in range(1, 1 << v):
        inside = np.array([(s & ~mask) == 0 for s in set_masks])
        p_a = sum(p[i] for i in range(v) if mask >> i & 1)
        best = max(best, probs[inside].sum() - p_a)
    return 1.0 - best


def _rrs_accept(p: np.ndarray, qs: list[np.ndarray], drafts: tuple[int, ...]) -> float:
    """P(some draft accepted) for one draft tuple: accept x_j w.p. min(1, r_j(x_j)/q_j(x_j)), where r_1 = p and a
    rejection moves to r_{j+1} = norm(max(0, r_j − q_j))."""
    r, miss = p.copy(), 1.0
    for x, q_j in zip(drafts, qs):
        a = min(1.0, r[x] / q_j[x]) if q_j[x] > 0 else 0.0
        miss *= 1.0 - a
        r = np.clip(r - q_j, 0.0, None)
        if r.sum() <= 1e-15:  # r ≤ q_j everywhere: every draft from here on is accepted
            break
        r = r / r.sum()
    return 1.0 - miss


def rrs_acceptance(p, q, n: int) -> float:
    """Exact acceptance rate of recursive rejection sampling with n i.i.d. drafts."""
    p, q = _check(p, q, n)
    return float(sum(prob * _rrs_accept(p, [q] * n, t) for t, prob in draft_tuples(q, n, False)))


def rsd_acceptance(p, q, n: int) -> float:
    """Exact acceptance rate of RRS without replacement (RSD): draft j comes from q restricted to the tokens not
    drawn yet, renormalised, and that q_j enters both the ratio and the residual."""
    p, q = _check(p, q, n)
    total = 0.0
    for t, prob in draft_tuples(q, n, True):
        qs, used = [], np.zeros(len(q), dtype=bool)
        for x in t:
            q_j = np.where(used, 0.0, q)
            qs.append(q_j / q_j.sum())
            used[x] = True
        total += prob * _rrs_accept(p, qs, t)
    return float(total)


def report(p, q, n: int, without_replacement: bool = False) -> dict:
    """Everything the CLI prints: α* both ways and the verifiers' exact acceptance rates for this p, q, n."""
    p_n, q_n = _check(p, q, n)
    distinct_ok = n <= int((q_n > 0).sum())
    lp = alpha_star_lp(p_n, q_n, n, without_replacement)
    dual = alpha_star_dual(p_n, q_n, n, without_replacement)
    return {"p": p_n.tolist(), "q": q_n.tolist(), "drafts": n, "without_replacement": without_replacement,
            "alpha_star": dual, "alpha_star_lp": lp, "alpha_star_dual": dual,
            "alpha_star_with_replacement": alpha_star_dual(p_n, q_n, n, False),
            "alpha_star_without_replacement": alpha_star_dual(p_n, q_n, n, True) if distinct_ok else None,
            "single_draft": float(np.minimum(p_n, q_n).sum()),
            "rrs_acceptance": rrs_acceptance(p_n, q_n, n),
            "rsd_acceptance": rsd_acceptance(p_n, q_n, n) if distinct_ok else None}


MAX_TUPLES = 1500  # per sibling group in a live run: keeps the enumeration fast enough to run every round


def sibling_bounds(p_V, q_V, n: int, must_include: list[int] = ()) -> dict | None:
    """α* (with and without replacement), Σ min(p, q) and the exact RRS / RSD acceptance for n siblings at one
    position of a real model: p and q (torch or numpy vectors over the whole vocabulary) are truncated to the tokens
    with the most p + q mass (the drafted ones included) and renormalised. The support is as large as keeps the
    enumeration within MAX_TUPLES (at most MAX_VOCAB tokens); None when n is too large for that."""
    p_full = np.asarray(p_V, dtype=float)
    q_full = np.asarray(q_V, dtype=float)
    k = min(MAX_VOCAB, 10, int(np.floor(MAX_TUPLES ** (1.0 / n) + 1e-9)))
    if n > 8 or k < min(n + 1, int((q_full > 0).sum())) or k < 2:
        return None
    order = [int(i) for i in np.argsort(-(p_full + q_full))[: k + len(must_include)]]
    keep = list(dict.fromkeys([int(i) for i in must_include] + order))[:k]
    p, q = p_full[keep], q_full[keep]
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    distinct_ok = n <= int((q > 0).sum())
    return {"support": len(keep), "single_draft": float(np.minimum(p, q).sum()),
            "alpha_star_with": alpha_star_dual(p, q, n, False),
            "alpha_star_without": alpha_star_dual(p, q, n, True) if distinct_ok else None,
            "exact_rrs": rrs_acceptance(p, q, n), "exact_rsd": rsd_acceptance(p, q, n) if distinct_ok else None}
