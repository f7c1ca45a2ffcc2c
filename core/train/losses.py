"""Alignment losses for a drafter q_θ against the target p, per position, over the drafter's (trimmed) vocabulary.

Inputs: drafter logits (N, k); the target's probabilities on the same k tokens, ``p_Nk`` (its top 64, zero elsewhere,
not renormalised: the mass it puts on other tokens is unknown and counted as 0); hard labels ``y_N`` (the tokens the
target wrote, as indices into the k kept tokens; -1 where the token is not kept).

- ``seqkd`` — FastDraft's sequence-level KD: cross-entropy on the tokens the target generated.
- ``fkl`` — token-level forward KL(p || q) with p renormalised over its top 64 ∩ kept tokens (the constant dropped).
- ``tvd`` — total variation ½ Σ|p − q|: 1 − TVD is the acceptance probability of speculative sampling at T = 1.
- ``tvdpp`` — TVD++ (Goel et al., 2024), the policy-gradient form of TVD with variance reduction. ∇TVD =
  −E_{x∼q}[r(x) ∇log q(x)] with reward r(x) = 1[p(x) > q(x)]; TVD++ replaces r by the normalised advantage
  A = (r − μ)/σ (stop-gradient) with μ, σ the mean and standard deviation of r under q at that position, and
  minimises −E_{x∼q}[A(x) log q(x)] (the expectation exact over the vocabulary, not sampled). Since Σ∇q = 0 the
  baseline μ does not change the direction: its gradient is ∇TVD / σ, a per-position step size. This is our
  reading of the paper's definition (its exact statistics could not be re-checked).
- ``tvdpp-vocab`` — a variant found in third-party code, labelled as such: no q weighting, μ and σ taken across
  the vocabulary axis, loss −Σ_x A(x) log q(x). It is not a gradient of TVD.
"""

from __future__ import annotations

import torch

LOSSES = ("seqkd", "fkl", "tvd", "tvdpp", "tvdpp-vocab")
EPS = 1e-6


def loss(name: str, logits_Nk: torch.Tensor, p_Nk: torch.Tensor, y_N: torch.Tensor) -> torch.Tensor:
    """The mean loss ``name`` over positions (positions without a usable target are left out)."""
    logq = torch.log_softmax(logits_Nk.float(), -1)
    if name == "seqkd":
        ok = y_N >= 0
        return -(logq[ok].gather(-1, y_N[ok, None])).mean() if ok.any() else logq.sum() * 0
    mass = p_Nk.sum(-1)
    ok = mass > 0
    logq, p = logq[ok], p_Nk[ok].float()
    if not ok.any():
        return logits_Nk.sum() * 0
    if name == "fkl":
        return -(p / p.sum(-1, keepdim=True) * logq).sum(-1).mean()
    q = logq.exp()
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1).mean()
    if name == "tvdpp":
        return tvdpp_on_policy(logq, p).mean()
    if name == "tvdpp-vocab":
        return tvdpp_vocab_axis(logq, p).mean()
    raise ValueError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")


def tvdpp_on_policy(logq: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per position −Σ_x q(x) A(x) log q(x), A = (r − E_q r) / std_q r, r = 1[p > q]; q and A detached."""
    q = logq.detach().exp()
    r = (p > q).float()
    mu = (q * r).sum(-1, keepdim=True)
    sigma = ((q * (r - mu) ** 2).sum(-1, keepdim=True)).sqrt()
    advantage = (r - mu) / (sigma + EPS)
    return -(q * advantage * logq).sum(-1)


def tvdpp_vocab_axis(logq: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The third-party variant: A = (r − mean_x r) / std_x r across the vocabulary; −Σ_x A(x) log q(x)."""
    r = (p > logq.detach().exp()).float()
    advantage = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + EPS)
    return -(advantage * logq).sum(-1)


def tvd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p - q).abs().sum(-1)
