"""Shared test helpers (no fixtures: those live in conftest.py). Test files import from here, never from each other.

- references: Hugging Face greedy, noisy copies of a model, greedy acceptance on two chat prompts;
- the registry tables' drafter construction (what each registered drafter needs on a tiny model);
- a 6-token model, and the law of the first two sampled tokens: exact from the target, empirical over many seeds;
- calling the app tabs' handlers directly;
- tiny random VAR checkpoints, and random official-layout VAR files at reduced width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from core.options import option_fields
from core.runtime.models import LoadedModel, has_sliding_layers, load_model
from core.specdec import Session, SessionConfig
from core.specdec.drafters import DRAFTERS, Drafter, build_drafter
from core.specdec.drafters.early_exit import default_exit_layer
from core.specdec.drafters.falcon import FalconNet
from core.specdec.drafters.fastdraft import build_network
from core.specdec.drafters.heads import ARCHS, DraftHeads, HeadsConfig, ResBlock, prefix_layer
from core.specdec.drafters.kangaroo_adapter import KangarooAdapter
from core.specdec.drafters.longspec import LongSpecNet, default_checkpoint as longspec_checkpoint, random_outputs
from core.specdec.sampling import SamplingConfig, warp
from core.specdec.verify import build_verifier
from core.specdec.vocab_trim import VocabTrimOptions
from core.train.corpus import write_counts

# ------------------------------------------------------------------------------------------------ references
_HF_GREEDY: dict[tuple, tuple[torch.nn.Module, list[int]]] = {}


def hf_greedy(model: LoadedModel, ids: list[int], n: int) -> list[int]:
    """Reference: Hugging Face generate, plain greedy (stops at EOS). Deterministic, so it is computed once per model,
    prompt and length (the registry tables ask for the same reference once per drafter × verifier); the key holds
    every parameter's version counter, so a model changed in place since is decoded again."""
    net = model.model
    key = (id(net), tuple(ids), n, sum(p._version for p in net.parameters()))
    if key not in _HF_GREEDY:
        with torch.inference_mode():
            out = net.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                               pad_token_id=net.generation_config.pad_token_id)
        _HF_GREEDY[key] = (net, out[0, len(ids):].tolist())  # the model is kept: its id cannot be reused
    return list(_HF_GREEDY[key][1])


def perturbed(model: LoadedModel, scale: float, seed: int = 1) -> LoadedModel:
    """A copy of a model with Gaussian noise added to every weight: a drafter that agrees with it only partly."""
    net = copy.deepcopy(model.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp_min(1e-3))
    return LoadedModel(name=f"{model.name}-noisy", model=net, tokenizer=model.tokenizer, source="test")


ACCEPTANCE_PROMPTS = ("Write a haiku about autumn.", "Explain what a rainbow is in two sentences.")


def greedy_acceptance(target: LoadedModel, drafter, n: int, gamma: int = 1) -> float:
    """α of ``drafter`` on the two acceptance prompts (chat template, greedy, ``n`` tokens each), after checking that
    each output equals Hugging Face greedy."""
    drafted = accepted = 0
    for text in ACCEPTANCE_PROMPTS:
        ids = target.encode(text, chat=True)
        config = SessionConfig(target=target.name, drafter=drafter.name, gamma=gamma, max_new_tokens=n)
        session = Session(target, drafter, build_verifier("greedy"), ids, config)
        for _ in session.run():
            pass
        assert session.generated_ids == hf_greedy(target, ids, n)[: len(session.generated_ids)]
        drafted, accepted = drafted + session.stats.drafted, accepted + session.stats.accepted
    return accepted / drafted


# ------------------------------------------------------------------------------------------------ registry tables
# drafters whose head VocabTrim can trim (their options include VocabTrim's)
TRIMMABLE = [name for name, cls in DRAFTERS.items() if issubclass(cls.Options, VocabTrimOptions)]
_COUNTS: dict = {}


def counts_file(target: LoadedModel, favoured: tuple[int, ...] = ()) -> Path:
    """A token-count file for ``target``'s tokenizer (VocabTrim's calibration) that ranks ``favoured`` first, then
    every other id by id; written once per (target, favoured) to a temporary folder."""
    key = (target.name, tuple(favoured))
    if key not in _COUNTS:
        import tempfile

        counts = torch.ones(target.vocab_size, dtype=torch.int64)
        for rank, tok in enumerate(dict.fromkeys(favoured)):
            counts[tok] = 10_000 - rank
        folder = Path(tempfile.mkdtemp(prefix="draftscope-counts-"))
        _COUNTS[key] = write_counts(folder / "counts.safetensors", counts, target, "test")
    return _COUNTS[key]


def table_drafter(name: str, target: LoadedModel, draft_model: LoadedModel | None, trim: int | None = None,
                  favoured: tuple[int, ...] = ()) -> Drafter:
    """The registered drafter ``name`` for the registry tables: ``draft_model`` where it takes one, 3-grams, EasySpec
    around the draft model on shallow targets, for Kangaroo an adapter initialised from the target's middle layer
    with η = 0, for FastDraft an untrained two-layer network from the target's first and last layers and for Medusa /
    Hydra three heads with random blocks, ADED from an empty store that learns the prompt, PEARL around the early
    exit on two threads, OmniDraft with a tiny model of the other family (another tokenizer) (SmolLM2 uses the
    shipped adapter, drafter, heads, trigram store and PEARL around FastDraft, and OmniDraft tiny-gemma).
    ``trim``: VocabTrim to that many tokens, ``favoured`` ranked first. Skips PEARL and LongSpec on sliding-window
    targets (they refuse them, with a message)."""
    declared = {f.name for f in option_fields(DRAFTERS[name].Options)}
    options = {k: v for k, v in {"draft_model": draft_model, "ngram_size": 3}.items() if k in declared}
    if name == "pearl" and has_sliding_layers(target.model):
        pytest.skip("PEARL's cross-round rollback is not available for sliding-window models (it says so)")
    if name == "easyspec" and draft_model is not None and default_exit_layer(target.n_layers) < 4:
        options["base"] = "model"  # an early exit of under 4 layers has only one-layer groups: nothing would be fuzzy
    if name == "kangaroo" and target.name != "smollm2-135m":
        options.update(adapter=KangarooAdapter.from_target(target.model, target.n_layers // 2), eta=0.0)
    if name == "fastdraft" and target.name != "smollm2-135m":
        layers = [0, target.n_layers - 1]
        options["checkpoint"] = build_network(target, len(layers), torch.arange(target.vocab_size), layers)
    if name == "falcon" and target.name != "smollm2-135m":
        options["checkpoint"] = (random_falcon(target), None)
    if name in ARCHS and target.name != "smollm2-135m":
        options["checkpoint"] = (random_heads(target, name), None)
    if name == "aded" and target.name != "smollm2-135m":  # the shipped store is SmolLM2's: learn from the prompt
        options.update(store="empty", learn_prompt=True)
    if name == "omnidraft":  # another tokenizer where there is one: the tiny models draft for each other's family
        other = {"tiny-llama": "tiny-gemma", "tiny-gemma": "tiny-llama", "smollm2-135m": "tiny-gemma"}
        if target.name in other:
            options["draft_model"] = load_model(other[target.name], device=target.device, dtype=target.dtype)
    if name == "pearl" and target.name != "smollm2-135m":  # around an early exit, really on two threads
        options.update(base=table_drafter("early-exit", target, draft_model), parallel=True)
    if name == "longspec":  # LongSpec: an untrained block built in memory (SmolLM2: the shipped one, once trained)
        if has_sliding_layers(target.model):
            pytest.skip("LongSpec reads a full-attention last layer's cache; it refuses sliding-window models "
                        "(it says so)")
        if target.name != "smollm2-135m":
            options["checkpoint"] = random_longspec(target)
        elif not longspec_checkpoint(target.name).is_file():
            pytest.skip("no LongSpec drafter ships for smollm2-135m yet (python -m core.train.longspec)")
    if trim is not None:
        options.update(vocab_trim=trim, vocab_counts=str(counts_file(target, favoured)))
    return build_drafter(name, target, options)


def random_heads(target: LoadedModel, arch: str, n_heads: int = 3, scale: float = 0.5, seed: int = 0,
                 identity: bool = False, prefix: bool = False) -> DraftHeads:
    """Untrained draft heads for ``target``: random blocks (``scale`` × the default init) so they neither copy the
    target nor ignore it; ``identity``: zero blocks, so every head returns h_t unchanged (the target's own next
    token, i.e. the last committed one; with ``prefix`` Hydra++'s prefix layer starts as the identity too)."""
    param = next(target.model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = DraftHeads(HeadsConfig(arch, n_heads, 1, target.model.config.hidden_size, prefix),
                           prefix_layer(target) if prefix else None)
        with torch.no_grad():
            for block in heads.modules():
                if isinstance(block, ResBlock):
                    if identity:
                        block.linear.weight.zero_()
                        block.linear.bias.zero_()
                    else:
                        block.linear.weight.normal_(0.0, scale / block.linear.in_features ** 0.5)
            if prefix and not identity:  # let the prefix layer's attention and MLP count (its cache then matters)
                for proj in (heads.prefix.self_attn.o_proj, heads.prefix.mlp.down_proj):
                    proj.weight.normal_(0.0, scale / proj.in_features ** 0.5)
    return heads.to(device=target.device, dtype=param.dtype).eval()


def random_longspec(target: LoadedModel, scale: float = 0.5, seed: int = 0) -> LongSpecNet:
    """An untrained LongSpec block for ``target``: copied from its last layer, with random output projections (so its
    drafts depend on its own ring and on the target's cache)."""
    return random_outputs(LongSpecNet.from_target(target), scale, seed).eval()


def random_falcon(target: LoadedModel, scale: float = 0.5, seed: int = 0) -> FalconNet:
    """An untrained Falcon drafter for ``target`` with random fusion and output projections (so its predictions
    depend on the inputs, the block partner and the cache)."""
    param = next(target.model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FalconNet(target)
        with torch.no_grad():
            for proj in (net.fuse, net.layer.self_attn.o_proj, net.layer.mlp.down_proj):
                proj.weight.add_(torch.randn_like(proj.weight) * scale / proj.in_features ** 0.5)
    return net.to(device=target.device, dtype=param.dtype).eval()


# ------------------------------------------------------------------------------------------------ a 6-token model
class DigitTokenizer:
    """A 6-token vocabulary for the distribution tests (a test-only stand-in for a real tokenizer)."""

    eos_token_id = None
    chat_template = None

    def get_vocab(self):
        return {str(i): i for i in range(6)}

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids)

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(c) for c in text.split()]}


def vocab6_model(seed: int = 0, layers: int = 4, window: int | None = None) -> LoadedModel:
    """A random llama with a 6-token vocabulary (no EOS): its whole two-token law has 36 cells, so a few hundred
    samples measure it, and every forward is cheap. ``window``: a Gemma 3 instead, its layers alternating sliding
    window (of that many positions) and full attention."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    shape = dict(vocab_size=6, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64, initializer_range=0.2, bos_token_id=None,
                 eos_token_id=None, pad_token_id=None)
    if window is None:
        config, cls, name = LlamaConfig(**shape), LlamaForCausalLM, f"vocab6-{layers}l-{seed}"
    else:
        types = (["sliding_attention", "full_attention"] * layers)[:layers]
        config = Gemma3TextConfig(**shape, head_dim=16, sliding_window=window, layer_types=types)
        config._attn_implementation = "sdpa"
        cls, name = Gemma3ForCausalLM, f"vocab6-gemma-w{window}-{layers}l-{seed}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config).eval()
    model.generation_config.eos_token_id = None
    return LoadedModel(name=name, model=model, tokenizer=DigitTokenizer(), source="test")


# ------------------------------------------------------------------------------------------------ two-token law
def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between two laws of the same shape."""
    return 0.5 * float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).sum())


def exact_two_token_law(model: LoadedModel, prompt: list[int], sampling: SamplingConfig) -> np.ndarray:
    """(V, V): P(first two tokens = a, b) when sampling from the target alone after ``prompt``, under ``sampling``'s
    warper (temperature, top-k, top-p): p(a | prompt) · p(b | prompt + a)."""
    def p(ids):
        with torch.inference_mode():
            return warp(model.model(torch.tensor([ids])).logits[0, -1:], sampling)[0].double().numpy()

    p1 = p(prompt)
    law = np.zeros((len(p1), len(p1)))
    for a in np.flatnonzero(p1):
        law[a] = p1[a] * p(prompt + [int(a)])
    return law


@dataclass
class SampledLaw:
    """The first two tokens of ``n`` runs (seeds 0..n-1) of one session, against the target's exact law."""

    counts: np.ndarray  # (V, V) how often each pair came first
    exact: np.ndarray  # (V, V) the target's law
    drafted: int  # drafted tokens (chain) or nodes (tree), over all runs
    accepted: int
    rejected: int  # verified positions that were rejected (for a tree: walks stopped by rejecting every child)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def tv(self) -> float:
        return tv(self.counts / self.n, self.exact)

    def chi2_pvalue(self, other: SampledLaw) -> float:
        """p-value of the chi² test that two samples of pairs come from the same law."""
        keep = (self.counts + other.counts).ravel() > 0
        return float(chi2_contingency(np.stack([self.counts.ravel()[keep], other.counts.ravel()[keep]]))[1])


def sampled_law(target: LoadedModel, drafter: Drafter, verifier, prompt: list[int], n: int, **config) -> SampledLaw:
    """Run ``drafter`` + ``verifier`` (a registered name or an instance) from ``prompt`` with seeds 0..n-1, two
    tokens each (``config``: SessionConfig fields, e.g. temperature, gamma, tree), and tally the first two tokens."""
    verifier = build_verifier(verifier) if isinstance(verifier, str) else verifier
    config = SessionConfig(target=target.name, drafter=drafter.name, verifier=verifier.name, record=False,
                           **{"max_new_tokens": 3, **config})
    session = Session(target, drafter, verifier, prompt, config)
    vocab = target.vocab_size
    counts, drafted, accepted, reached = np.zeros((vocab, vocab)), 0, 0, 0
    for seed in range(n):
        session.config.seed = seed
        session.reset()
        for _ in session.run(2):
            pass
        a, b = session.generated_ids[:2]
        counts[a, b] += 1
        stats = session.stats
        drafted, accepted, reached = drafted + stats.drafted, accepted + stats.accepted, reached + sum(stats.reached)
    exact = exact_two_token_law(target, prompt, config.sampling)
    return SampledLaw(counts, exact, drafted, accepted, reached - accepted)


def assert_follows_target(law: SampledLaw, bound: float, plain: SampledLaw | None = None) -> None:
    """The sampled pairs follow the target's exact law (TV below ``bound``), agree with plain sampling (chi², when
    ``plain`` is given), and the drafts were both accepted and rejected, each in more than 5 % of the verified
    positions (so the check is not plain decoding in disguise)."""
    assert law.tv < bound, (law.tv, law.counts, law.exact)
    if plain is not None:
        assert law.chi2_pvalue(plain) > 1e-3, (law.chi2_pvalue(plain), law.counts, plain.counts)
    verified = law.accepted + law.rejected
    assert 0.05 * verified < law.accepted < 0.95 * verified, (law.drafted, law.accepted, law.rejected)


# ------------------------------------------------------------------------------------------------ app tabs
def no_progress(*args, **kwargs) -> None:
    """Stands in for gr.Progress when a tab's handlers are called directly."""


def call_session(endpoint, names, settings: dict, state: dict | None = None):
    """A session tab's Step / Run / Reset (``endpoint``, a handler over ``state`` and the settings ``names``) called
    directly: ``settings`` by name (the others None), no progress bar."""
    values = {**dict.fromkeys(names), **settings}
    return endpoint(state or {}, *[values[n] for n in names], progress=no_progress)


def call_handler(handler, outputs: tuple[str, ...], settings: dict, state: dict | None = None, **kw) -> dict:
    """Call a tab's handler directly with ``settings`` (``kw`` override them) and no progress bar; its outputs by
    name."""
    return dict(zip(outputs, handler(state or {}, **{**settings, **kw}, progress=no_progress), strict=True))


def app_error(handler, *args, **kwargs) -> str:
    """Call a tab's handler (a generator handler is run to its end) expecting a ``gr.Error``: its message, checked to
    be one line without a traceback or a server path."""
    import inspect

    import gradio as gr

    with pytest.raises(gr.Error) as info:
        out = handler(*args, **kwargs)
        if inspect.isgenerator(out):
            for _ in out:
                pass
    message = str(info.value.message)
    assert "\n" not in message and "Traceback" not in message and "/work/" not in message, message
    return message


def assert_error_then_usable(step, kw: dict, message: str, state: dict | None = None) -> None:
    """``step(state, **kw)`` with bad settings ``kw`` raises a gr.Error with ``message`` (one line, no traceback), and
    the tab stays usable: the next step from that state, with good settings, runs one round."""
    assert message in app_error(step, state, **kw)
    again = step(state)
    assert not again["status"].startswith("**Error"), again["status"]
    assert len(tab_session(again).records) == 1


def tab_session(out: dict) -> Session:
    """The session a tab handler's outputs point to (through the state's session id)."""
    from app import common

    return common.get_session(out["state"]["sid"])


# ------------------------------------------------------------------------------------------------ tiny VAR
def write_tiny_checkpoints(root: str | Path, seed: int = 0) -> Path:
    """Write four tiny random VAR checkpoints (tokenizer, large, small, classifier; K=64, C=8, scales 1..8) to
    ``root``; returns it."""
    from core.var.bundle import FILES
    from core.var.classifier import ImageClassifier
    from core.var.model import VAR, VARConfig
    from core.var.vqvae import MultiScaleVQVAE, VQVAEConfig

    root = Path(root)
    torch.manual_seed(seed)
    vq = MultiScaleVQVAE(VQVAEConfig(vocab_size=64, hidden=16, embed_dim=8)).eval()
    vq.save(root / FILES["vq"], {"kind": "tiny"})
    large = VAR(VARConfig(64, 8, vq.scales, depth=3, width=32, heads=4)).eval()
    large.save(root / FILES["large"], {"kind": "tiny"})
    small = VAR(VARConfig(64, 8, vq.scales, depth=2, width=16, heads=2)).eval()
    small.save(root / FILES["small"], {"kind": "tiny"})
    ImageClassifier(width=4).eval().save(root / FILES["classifier"], {"kind": "tiny"})
    return root


def tiny_bundle(root: str | Path):
    """Write (if needed) and load a tiny VAR bundle from ``root`` on the CPU."""
    from core.var.bundle import FILES, load_bundle

    root = Path(root)
    if not (root / FILES["classifier"]).is_file():
        write_tiny_checkpoints(root)
    return load_bundle(root, device="cpu")


# ------------------------------------------------------------------------------------------------ official VAR layout
OFFICIAL_V, OFFICIAL_C = 64, 8  # reduced vocabulary and latent width
OFFICIAL_DEPTHS = (4, 2)  # the reduced drafter and refiner


def write_official(root: str | Path, scales: tuple[int, ...] | None = None, seed: int = 0,
                   ch_mult: tuple[int, ...] = (1, 2)) -> Path:
    """Random tokenizer, d4 drafter (width 64) and d2 refiner (width 32) in the official state-dict layout, under the
    official file names in ``root`` (scales: the official ten unless given); returns it."""
    from core.var.official import OfficialVAR, OfficialVARConfig
    from core.var.official_load import VQ_FILE, var_file
    from core.var.official_vq import PATCH_NUMS, OfficialVQConfig, OfficialVQVAE

    root, scales = Path(root), PATCH_NUMS if scales is None else scales
    torch.manual_seed(seed)
    vq = OfficialVQVAE(OfficialVQConfig(vocab_size=OFFICIAL_V, embed_dim=OFFICIAL_C, ch=32, ch_mult=ch_mult,
                                        num_res_blocks=1, scales=scales))
    torch.save(vq.state_dict(), root / VQ_FILE)
    for depth, width in zip(OFFICIAL_DEPTHS, (64, 32), strict=True):
        model = OfficialVAR(OfficialVARConfig(depth=depth, width=width, heads=2, vocab_size=OFFICIAL_V,
                                              embed_dim=OFFICIAL_C, scales=scales))
        torch.save(model.state_dict(), root / var_file(depth))
    return root
