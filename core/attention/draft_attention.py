"""DraftAttention (Shen et al.): a low-resolution "draft" attention map guides block-sparse attention.

Tokens form a 1-D sequence (causal, as in a language model's prefill) or a grid of ``F × H × W`` tokens in row-major
frame / row / column order (non-causal, as in a video diffusion transformer). Queries and keys are average-pooled per
block (1-D: ``block`` contiguous tokens; grid: ``bf × bh × bw`` tiles), the pooled queries attend to the pooled keys
(softmax of ``q̄·k̄ · scaling``) and, per head, only the top ``1 − r`` fraction of block pairs of that draft map is
computed at full resolution (``r`` = sparsity, 0.9 in the paper). On CPU the sparse attention is computed densely with
a token-level mask expanded from the kept block pairs; the FLOPs a block-sparse kernel would skip are reported as
``flop_sparsity``.

The method plugs into a transformers model through its attention-function registry: ``draft_attention_mode`` switches
the model to an attention function named ``"draftscope_draft"`` for the duration of a ``with`` block
(``core.attention.registry``). No model code is patched. Pure torch: nothing here imports gradio or plotly.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from core.errors import DraftScopeError
from core.runtime.devices import input_device
from core.runtime.masks import causal_allowed

ATTN_NAME = "draftscope_draft"
MAX_MAP_CELLS = 128  # the full attention map of a record is block-averaged down to at most this many rows / columns
LOGIT_CHUNK_BYTES = 32 * 2 ** 20  # the two prefills' logits are compared this many bytes of rows at a time

Grid = tuple[int, int, int]
Block = int | Sequence[int]


# ------------------------------------------------------------------------------------------------ pooling
def _grid_tiles(block: Block, grid: Grid) -> tuple[int, int, int]:
    if isinstance(block, int) or len(block) != 3:
        raise DraftScopeError(f"a grid layout needs a 3-D block (bf, bh, bw), got {block!r}")
    tiles = tuple(int(b) for b in block)
    if min(tiles) < 1 or min(grid) < 1:
        raise DraftScopeError(f"block {tiles} and grid {tuple(grid)} must be positive")
    return tiles


def token_blocks(n: int, block: Block, grid: Grid | None = None, device=None) -> tuple[torch.Tensor, int]:
    """The block index of every token, (n,) long, and the number of blocks.

    1-D: token ``t`` is in block ``t // block``. Grid ``(F, Hh, W)``: token ``t = (f·Hh + y)·W + x`` is in tile
    ``((f // bf)·nbh + y // bh)·nbw + x // bw`` with ``nbh = ceil(Hh / bh)``, ``nbw = ceil(W / bw)`` (tiles row-major).
    """
    pos_n = torch.arange(n, device=device)
    if grid is None:
        if not isinstance(block, int) or block < 1:
            raise DraftScopeError(f"a 1-D layout needs a positive int block, got {block!r}")
        return pos_n // block, math.ceil(n / block)
    bf, bh, bw = _grid_tiles(block, grid)
    nf, nh, nw = (int(g) for g in grid)
    if nf * nh * nw != n:
        raise DraftScopeError(f"grid {tuple(grid)} holds {nf * nh * nw} tokens, the sequence has {n}")
    f, y, x = pos_n // (nh * nw), (pos_n // nw) % nh, pos_n % nw
    nbf, nbh, nbw = math.ceil(nf / bf), math.ceil(nh / bh), math.ceil(nw / bw)
    return ((f // bf) * nbh + y // bh) * nbw + x // bw, nbf * nbh * nbw


def pool_blocks(x: torch.Tensor, block: Block, grid: Grid | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool tokens per block: x (B, H, n, d) → pooled (B, H, nb, d), plus each token's block index (n,).

    Partial blocks (the last 1-D block, edge tiles of a grid) are averaged over the tokens they really hold.
    Accumulates in float32 and returns x's dtype.
    """
    blk_n, nb = token_blocks(x.shape[-2], block, grid, device=x.device)
    sums = x.new_zeros(*x.shape[:-2], nb, x.shape[-1], dtype=torch.float32)
    sums.index_add_(-2, blk_n, x.float())
    counts = torch.bincount(blk_n, minlength=nb).clamp_min(1).to(torch.float32)
    return (sums / counts[:, None]).to(x.dtype), blk_n


# ------------------------------------------------------------------------------------------------ block selection
@dataclass
class BlockSelection:
    """The draft map and the block pairs it selects.

    pooled (B, H, nbq, nbk): softmax over the allowed key blocks of the pooled scores (0 where not allowed).
    keep (B, H, nbq, nbk) bool: block pairs computed at full resolution. allowed (nbq, nbk) bool: pairs that exist at
    all (causal 1-D: key block ≤ query block). q_blocks (n,), k_blocks (m,): each token's block index.
    """

    pooled: torch.Tensor
    keep: torch.Tensor
    allowed: torch.Tensor
    q_blocks: torch.Tensor
    k_blocks: torch.Tensor


def n_selected(sparsity: float, n_allowed: int) -> int:
    """How many block pairs a head keeps: ceil((1 − r)·N_allowed), at least 1 (a 1e-9 slack absorbs float error)."""
    if not 0.0 <= sparsity < 1.0:
        raise DraftScopeError(f"sparsity must be in [0, 1), got {sparsity}")
    return max(1, min(n_allowed, math.ceil((1.0 - sparsity) * n_allowed - 1e-9)))


def select_blocks(q: torch.Tensor, k: torch.Tensor, sparsity: float, block: Block, causal: bool = True,
                  grid: Grid | None = None, scaling: float | None = None) -> BlockSelection:
    """Pool q (B, H, n, d) and k (B, H, m, d) per block, build the draft map and keep its top block pairs per head.

    Allowed pairs: causal 1-D layouts allow key block ≤ query block (needs n == m); grids are always non-causal (the
    ``causal`` flag applies to 1-D layouts only). The draft map is the softmax, over each query block's allowed key
    blocks, of ``q̄·k̄ · scaling`` (default 1/sqrt(d)).

    Selection ranks block pairs per (batch, head) over the whole map, not per row: the top
    K = ceil((1 − r)·N_allowed) allowed pairs by draft-map probability are kept. Ties are broken by a stable
    descending sort of the flattened (row-major) map, i.e. the earlier query block, then the earlier key block, wins.
    Causal 1-D layouts also always keep the diagonal pairs (so every query row sees at least itself): the kept count
    is then K plus those diagonal pairs that were not already in the top K. r = 0 keeps every allowed pair.
    """
    n, m = q.shape[-2], k.shape[-2]
    causal = causal and grid is None
    if causal and n != m:
        raise DraftScopeError(f"causal block selection needs as many queries as keys, got {n} and {m}")
    q_pool, q_blocks = pool_blocks(q, block, grid)
    k_pool, k_blocks = pool_blocks(k, block, grid)
    nbq, nbk = q_pool.shape[-2], k_pool.shape[-2]
    allowed = torch.ones(nbq, nbk, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed.tril()
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    scores = (q_pool.float() @ k_pool.float().transpose(-1, -2)) * scale
    pooled = scores.masked_fill(~allowed, float("-inf")).softmax(-1).masked_fill(~allowed, 0.0)
    keep = _top_pairs(pooled, allowed, n_selected(sparsity, int(allowed.sum())))
    if causal:
        keep |= torch.eye(nbq, nbk, dtype=torch.bool, device=q.device)
    return BlockSelection(pooled, keep, allowed, q_blocks, k_blocks)


def _top_pairs(pooled: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k highest allowed entries of each (B, H) map; stable sort → lower flat index wins ties."""
    flat = pooled.masked_fill(~allowed, float("-inf")).flatten(-2)
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[..., :k]
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, order, True)
    return keep.view(pooled.shape)


# ------------------------------------------------------------------------------------------------ attention
@dataclass
class DraftAttentionInfo:
    """What one draft-attention call did. keep / pooled are None where it ran densely without a selection (q_len 1)."""

    keep: torch.Tensor | None  # (B, H, nbq, nbk) bool
    pooled: torch.Tensor | None  # (B, H, nbq, nbk) draft map
    flop_sparsity: float  # fraction of the dense (causal, unpadded) query·key pairs skipped
    dense: bool  # True where the output is plain dense attention (r = 0, decoding)


def _allowed_tokens(n: int, m: int, causal: bool, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """Bool token mask (B|1, H|1, n, m) of pairs dense attention computes: causal (bottom-right aligned: query i, at
    position m − n + i, sees keys j ≤ m − n + i) & the caller's mask (bool, or additive where entries above half the
    dtype's minimum count as allowed)."""
    ok_nm = causal_allowed(n, m - n, device) if causal else torch.ones(n, m, dtype=torch.bool, device=device)
    if attention_mask is None:
        return ok_nm[None, None]
    if attention_mask.dtype != torch.bool:
        attention_mask = attention_mask > torch.finfo(attention_mask.dtype).min / 2
    return ok_nm & attention_mask


def flop_sparsity_of(token_mask: torch.Tensor, allowed_mask: torch.Tensor) -> float:
    """1 − (query·key pairs computed) / (pairs dense attention computes), summed over every batch row and head.

    token_mask: the pairs the sparse attention computes (already restricted to allowed); allowed_mask: the dense
    (causal, padded) pairs, broadcastable to token_mask.
    """
    dense = allowed_mask.expand_as(token_mask).sum().item()
    return 0.0 if dense == 0 else 1.0 - token_mask.sum().item() / dense


def _masked_sdpa(q, k, v, ok_mask, attention_mask, scaling):
    """sdpa under a bool token mask; an additive float attention_mask keeps its values where ok_mask is True."""
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        add = attention_mask.to(q.dtype).masked_fill(~ok_mask, torch.finfo(q.dtype).min)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=scaling)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=ok_mask, scale=scaling)


def draft_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sparsity: float, block: Block,
                    causal: bool = True, grid: Grid | None = None, scaling: float | None = None,
                    attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, DraftAttentionInfo]:
    """Block-sparse attention guided by the draft map: q, k, v (B, H, n, d) → out (B, H, n, d), info.

    Computes softmax(q·kᵀ·scaling) v over the token pairs in (expanded keep) & causal & attention_mask, densely with a
    mask. ``attention_mask`` is a bool (True = attend) or additive float mask broadcastable to (B, H, n, m), e.g.
    transformers' padding mask. Grids are non-causal. Sparse mode needs n == m (no cache prefix); a single query
    (decoding) runs dense attention without a selection, and r = 0 runs dense attention but still reports the draft
    map (every allowed pair kept).
    """
    n, m = q.shape[-2], k.shape[-2]
    causal = causal and grid is None
    dense_ok = _allowed_tokens(n, m, causal, attention_mask, q.device)
    if n == 1:
        out = _masked_sdpa(q, k, v, dense_ok, attention_mask, scaling)
        return out, DraftAttentionInfo(None, None, 0.0, True)
    if n != m:
        raise DraftScopeError(f"sparse draft attention needs as many queries as keys (no cache prefix), got {n} and "
                              f"{m}")
    sel = select_blocks(q, k, sparsity, block, causal=causal, grid=grid, scaling=scaling)
    if sparsity == 0:
        out = _masked_sdpa(q, k, v, dense_ok, attention_mask, scaling)
        return out, DraftAttentionInfo(sel.keep, sel.pooled, 0.0, True)
    keep_nm = sel.keep[..., sel.q_blocks[:, None], sel.k_blocks[None, :]]  # (B, H, n, m)
    ok_mask = keep_nm & dense_ok
    out = _masked_sdpa(q, k, v, ok_mask, attention_mask, scaling)
    return out, DraftAttentionInfo(sel.keep, sel.pooled, flop_sparsity_of(ok_mask, dense_ok), False)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a − b|| / ||b|| (Frobenius, float64); 0 when both are zero."""
    diff, ref = (a.double() - b.double()).norm().item(), b.double().norm().item()
    return 0.0 if diff == 0 else diff / ref if ref > 0 else math.inf


# ------------------------------------------------------------------------------------------------ model integration
@dataclass
class DraftAttentionSettings:
    """What the registered attention function does in prefill: sparsity r, 1-D block size (tokens) and the shortest
    prefill made sparse (shorter ones run dense)."""

    sparsity: float = 0.9
    block: int = 64
    min_len: int = 0


@dataclass
class LayerStat:
    """One sparse prefill call of one layer."""

    layer: int
    n_tokens: int
    flop_sparsity: float


@dataclass
class DraftAttentionState:
    """The active settings of a ``draft_attention_mode`` block and what its prefills did.

    capture_layer: when set, the attention call of that layer stores its inputs (GQA-repeated q, k, v (B, Hq, n, d),
    the attention mask and the scaling) in ``captured``.
    """

    settings: DraftAttentionSettings
    stats: list[LayerStat] = field(default_factory=list)
    capture_layer: int | None = None
    captured: dict | None = None

    def mean_flop_sparsity(self) -> float | None:
        """Token-weighted mean over the recorded sparse calls (weights n², the size of each attention map)."""
        weights = [s.n_tokens ** 2 for s in self.stats]
        if not weights:
            return None
        return sum(w * s.flop_sparsity for w, s in zip(weights, self.stats, strict=True)) / sum(weights)


_STATE: contextvars.ContextVar[DraftAttentionState | None] = contextvars.ContextVar("draftscope_draft", default=None)


def _repeat_kv(x_BHmd: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hkv, m, d) → (B, Hkv·groups, m, d), each KV head repeated for its group of query heads."""
    if groups == 1:
        return x_BHmd
    b, h, m, d = x_BHmd.shape
    return x_BHmd[:, :, None].expand(b, h, groups, m, d).reshape(b, h * groups, m, d)


def _draft_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """The registered attention function: query (B, Hq, n, d), key / value (B, Hkv, m, d) → ((B, n, Hq, d), None).

    Outside a ``draft_attention_mode`` block of this context (e.g. another thread using the same model), and for
    anything but a prefill (n == m > 1, n ≥ min_len), it is transformers' sdpa attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state = _STATE.get()
    n, m = query.shape[-2], key.shape[-2]
    if state is None or n != m or n < max(2, state.settings.min_len) or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    layer = getattr(module, "layer_idx", -1)
    if state.capture_layer is not None and layer == state.capture_layer:
        state.captured = {"q": query.clone(), "k": key.clone(), "v": value.clone(), "scaling": scaling,
                          "attention_mask": None if attention_mask is None else attention_mask.clone()}
    out, info = draft_attention(query, key, value, state.settings.sparsity, state.settings.block, causal=causal,
                                scaling=scaling, attention_mask=attention_mask)
    state.stats.append(LayerStat(layer, n, info.flop_sparsity))
    return out.transpose(1, 2).contiguous(), None


def draft_attention_mode(model, sparsity: float = 0.9, block: int = 64, min_len: int = 0,
                         capture_layer: int | None = None) -> contextlib.AbstractContextManager[DraftAttentionState]:
    """Run ``model`` (a transformers PreTrainedModel) with draft attention in every layer's prefill.

    Switches the model's attention implementation to ``ATTN_NAME`` (``core.attention.registry``) and restores the
    previous one on exit (exceptions included). Yields the state; its ``stats`` collect one ``LayerStat`` per sparse
    layer call. The settings live in a context variable: other threads calling the model meanwhile get plain sdpa
    attention (but the model object is switched for everyone, so do not nest modes over one model from several
    threads).
    """
    from core.attention.registry import attention_function

    n_selected(sparsity, 1)  # validates r
    if block < 1:
        raise DraftScopeError(f"block must be positive, got {block}")
    state = DraftAttentionState(DraftAttentionSettings(sparsity, block, min_len), capture_layer=capture_layer)
    return attention_function(model, ATTN_NAME, _draft_attention_forward, _STATE, state)


# ------------------------------------------------------------------------------------------------ one head's maps
@dataclass
class DraftAttentionMap:
    """One layer / head of a causal LM's prefill under draft attention, plus the effect on the model's logits.
    JSON-friendly: plain lists and numbers."""

    layer: int
    head: int  # query head
    block: int
    sparsity: float
    n_tokens: int
    full_map: list[list[float]]  # dense attention probabilities of the head, block-averaged to ≤ 128 × 128 cells
    full_map_cell: int  # tokens per full_map cell along each axis (1: not downsampled)
    pooled_map: list[list[float]]  # (nbq, nbk) draft map
    keep: list[list[bool]]  # (nbq, nbk) block pairs computed
    output_error: float  # relative error of this head's attention output vs dense
    flop_sparsity: float  # this head's fraction of causal query·key pairs skipped
    model_flop_sparsity: float | None  # over every layer and head of the sparse prefill (n²-weighted)
    logits_max_abs_diff: float  # prompt logits, sparse prefill (every layer) vs dense
    top1_agreement: float  # fraction of prompt positions whose argmax next token is the same
    kl_last: float  # KL(dense ‖ sparse) of the next-token distribution at the last position
    causal: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def downsample_map(a_nm: torch.Tensor, max_cells: int = MAX_MAP_CELLS) -> tuple[torch.Tensor, int]:
    """Block-average an (n, m) map to at most max_cells per axis with square c × c cells (edge cells partial)."""
    c = max(1, math.ceil(max(a_nm.shape) / max_cells))
    if c == 1:
        return a_nm, 1
    rows_1bm, _ = pool_blocks(a_nm[None, None], c)  # pools along the rows: (1, 1, nb_rows, m)
    cells_1cb, _ = pool_blocks(rows_1bm.transpose(-1, -2), c)  # then along the columns: (1, 1, nb_cols, nb_rows)
    return cells_1cb[0, 0].T, c


def _as_ids(ids, device) -> torch.Tensor:
    ids_t = torch.as_tensor(ids, dtype=torch.long, device=device)
    return ids_t.reshape(1, -1) if ids_t.dim() == 1 else ids_t


def _final_hidden(model, ids_1n: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state (after its final norm: what the LM head reads), (n, D), no logits."""
    return model.model(input_ids=ids_1n, use_cache=False).last_hidden_state[0]


def _head_logits(model, hidden_rD: torch.Tensor) -> torch.Tensor:
    """(r, D) → (r, V) float32 logits: the LM head, with the model's final soft-capping (Gemma's) where it has one."""
    logits = model.get_output_embeddings()(hidden_rD).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _logit_effect(model, dense_nD: torch.Tensor, sparse_nD: torch.Tensor) -> tuple[float, float, float]:
    """(max |Δlogit|, top-1 agreement over positions, KL(dense ‖ sparse) at the last position) of the two prefills'
    logits, computed from their last hidden states a chunk of rows at a time: never both (n, V) logits at once
    (on Gemma-3-270M at 8k tokens those are 8.6 GB each)."""
    n = dense_nD.shape[0]
    rows = max(1, LOGIT_CHUNK_BYTES // (4 * model.get_output_embeddings().weight.shape[0]))
    diff, agree = 0.0, 0
    for lo in range(0, n, rows):
        dense_rV, sparse_rV = _head_logits(model, dense_nD[lo:lo + rows]), _head_logits(model, sparse_nD[lo:lo + rows])
        diff = max(diff, (dense_rV - sparse_rV).abs_().max().item())
        agree += int((dense_rV.argmax(-1) == sparse_rV.argmax(-1)).sum())
    log_p, log_q = dense_rV[-1].double().log_softmax(-1), sparse_rV[-1].double().log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum().clamp_min(0.0).item()
    return diff, agree / n, kl


def draft_attention_map(model, ids, layer: int, head: int, sparsity: float = 0.9, block: int = 16) -> DraftAttentionMap:
    """Maps and errors of draft attention on one layer / query head of a causal LM's prefill of ``ids`` (a list of
    token ids, (n,) or (1, n)), and its effect on the logits when every layer's prefill uses it.

    Two prefills: a dense one (r = 0 under the registered function, identical to sdpa) that also captures the layer's
    q, k, v, and one with draft attention at ``sparsity`` in every layer. Each keeps only its last hidden states; the
    logits are compared from them a chunk of rows at a time (``_logit_effect``).
    """
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    if not 0 <= layer < n_layers or not 0 <= head < n_heads:
        raise DraftScopeError(f"layer {layer} / head {head} out of range ({n_layers} layers, {n_heads} heads)")
    ids_1n = _as_ids(ids, input_device(model))
    if ids_1n.shape[0] != 1 or ids_1n.shape[1] < 2:
        raise DraftScopeError("draft_attention_map needs one sequence of at least 2 tokens")
    with torch.inference_mode():
        with draft_attention_mode(model, 0.0, block, capture_layer=layer) as dense_state:
            dense_nD = _final_hidden(model, ids_1n)
        with draft_attention_mode(model, sparsity, block) as sparse_state:
            sparse_nD = _final_hidden(model, ids_1n)
        cap = dense_state.captured
        if cap is None:
            raise DraftScopeError(f"layer {layer} was not captured (does the model use transformers' attention "
                                  "registry?)")
        return _head_record(cap, layer, head, sparsity, block, _logit_effect(model, dense_nD, sparse_nD),
                            sparse_state.mean_flop_sparsity())


def _head_record(cap: dict, layer: int, head: int, sparsity: float, block: int, effect: tuple[float, float, float],
                 model_flop: float | None) -> DraftAttentionMap:
    """Build the record of one query head from the captured (B, Hq, n, d) inputs of its layer."""
    q, k, v = (cap[name][:1, head:head + 1].float() for name in ("q", "k", "v"))
    mask, scaling = cap["attention_mask"], cap["scaling"]
    mask = None if mask is None else mask[:1, :1]
    dense_out, _ = draft_attention(q, k, v, 0.0, block, scaling=scaling, attention_mask=mask)
    sparse_out, info = draft_attention(q, k, v, sparsity, block, scaling=scaling, attention_mask=mask)
    n = q.shape[-2]
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    ok_nm = _allowed_tokens(n, n, True, mask, q.device)[0, 0]
    probs_nn = ((q[0, 0] @ k[0, 0].T) * scale).masked_fill(~ok_nm, float("-inf")).softmax(-1).nan_to_num(0.0)
    full, cell = downsample_map(probs_nn)
    diff, agree, kl = effect
    return DraftAttentionMap(
        layer=layer, head=head, block=block, sparsity=float(sparsity), n_tokens=n, full_map=full.tolist(),
        full_map_cell=cell, pooled_map=info.pooled[0, 0].tolist(), keep=info.keep[0, 0].tolist(),
        output_error=relative_error(sparse_out, dense_out), flop_sparsity=info.flop_sparsity,
        model_flop_sparsity=model_flop, logits_max_abs_diff=diff, top1_agreement=agree, kl_last=kl)
