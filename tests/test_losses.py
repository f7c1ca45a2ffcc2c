"""The alignment losses against brute-force computations on a toy vocabulary."""

from __future__ import annotations

import pytest
import torch

from core.train.losses import LOSSES, loss, tvd


def _toy(seed: int, v: int = 7):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(v, generator=gen, dtype=torch.float64)
    p = torch.softmax(torch.randn(v, generator=gen, dtype=torch.float64) * 2, -1)
    return logits, p


@pytest.mark.parametrize("seed", range(5))
def test_tvdpp_equals_its_brute_force_definition(seed):
    """TVD++ written out token by token: r(x) = 1[p(x) > q(x)], μ = Σ q r, σ² = Σ q (r − μ)², A = (r − μ)/σ,
    loss = −Σ_x q(x) A(x) log q(x) with q and A held fixed; the gradient compared with autograd on our loss."""
    logits, p = _toy(seed)
    theta = logits.clone().requires_grad_(True)
    ours = loss("tvdpp", theta[None], p[None], torch.tensor([0]))
    ours.backward()
    q = torch.softmax(logits, -1)
    v = len(p)
    r = [1.0 if float(p[x]) > float(q[x]) else 0.0 for x in range(v)]
    mu = sum(float(q[x]) * r[x] for x in range(v))
    sigma = sum(float(q[x]) * (r[x] - mu) ** 2 for x in range(v)) ** 0.5
    adv = [(r[x] - mu) / (sigma + 1e-6) for x in range(v)]
    logq = torch.log_softmax(logits, -1)
    brute = -sum(float(q[x]) * adv[x] * float(logq[x]) for x in range(v))
    assert float(ours.detach()) == pytest.approx(brute, rel=1e-6)
    # d/dθ_j of −Σ_x q_x A_x log q_x(θ) with q_x, A_x fixed: −Σ_x q_x A_x (δ_xj − q_j)
    grad = [-sum(float(q[x]) * adv[x] * ((x == j) - float(q[j])) for x in range(v)) for j in range(v)]
    assert torch.allclose(theta.grad, torch.tensor(grad, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_tvdpp_gradient_is_the_tvd_gradient_over_sigma(seed):
    """The baseline leaves the direction alone: ∇TVD++ = ∇TVD / σ_r (exact, since Σ_x ∇q(x) = 0)."""
    logits, p = _toy(seed)
    a = logits.clone().requires_grad_(True)
    loss("tvdpp", a[None], p[None], torch.tensor([0])).backward()
    b = logits.clone().requires_grad_(True)
    loss("tvd", b[None], p[None], torch.tensor([0])).backward()
    q = torch.softmax(logits, -1)
    r = (p > q).double()
    mu = (q * r).sum()
    sigma = (q * (r - mu) ** 2).sum().sqrt()
    assert torch.allclose(a.grad * (sigma + 1e-6), b.grad, atol=1e-6)


def test_tvd_is_one_minus_the_acceptance_probability():
    logits, p = _toy(3)
    q = torch.softmax(logits, -1)
    assert float(tvd(p, q)) == pytest.approx(1 - float(torch.minimum(p, q).sum()))


def test_every_loss_decreases_on_a_toy_fit():
    """Each loss, minimised from a random start, moves q towards p (TVD falls) on a 7-token toy problem."""
    _, p = _toy(11)
    y = torch.tensor([int(p.argmax())])
    for name in LOSSES:
        theta = torch.zeros(7, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([theta], lr=0.5)
        start = float(tvd(p, torch.softmax(theta, -1)))
        for _ in range(200):
            opt.zero_grad()
            loss(name, theta[None], p[None], y).backward()
            opt.step()
        end = float(tvd(p, torch.softmax(theta.detach(), -1)))
        if name == "seqkd":  # hard labels: q concentrates on the argmax, so only agreement is promised
            assert int(theta.argmax()) == int(y), name
        else:
            assert end < start * 0.5, (name, start, end)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss"):
        loss("rkl", torch.zeros(1, 3), torch.full((1, 3), 1 / 3), torch.tensor([0]))
