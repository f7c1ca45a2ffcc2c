"""Records of a KV-importance run: plain dataclasses (lists and numbers, no tensors) that the visualizers and the CLI
read. One ``KVReport`` per (target, prompt): the full-cache reference and one ``PressRun`` per method and budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PressRun:
    """One method at one budget: what it kept, what it produced and what that cost."""

    method: str  # registry name: "full", "snapkv", "streamingllm", "h2o", "tova", "speckv", "specpc"
    budget: int  # KV entries kept per layer and KV head (token-level methods: prompt tokens kept)
    level: str  # "kv": each (layer, KV head) keeps its own positions; "tokens": one set of prompt tokens for all
    scores: list[float]  # per prompt token, the method's importance, aggregated over layers and heads, in [0, 1]
    kept: list[int]  # per prompt token, in how many (layer, head) caches it is kept (tokens level: 0 or L·H)
    output_ids: list[int]
    output_text: str
    agreement: float  # fraction of the full-cache greedy output's tokens this output matches, position by position
    recall: float  # mean over (layer, head) of |kept ∩ true top-budget| / budget (true = the full-cache target's)
    accuracy: float | None  # task answer found in the output (multi-constraint tasks: the fraction of constraints
    #   whose probe gave the value; None: the task has no checkable answer)
    prefill_ms: float  # scoring + compression + the target's prefill (drafting included for speckv / specpc)
    decode_ms: float
    kv_bytes: int  # keys + values kept in the target's cache after compression
    draft_ms: float = 0.0  # the drafter's share of prefill_ms (lookahead generation, its attention)
    recall_lh: list[list[float]] = field(default_factory=list)  # (layers, KV heads) recall per head
    head_scores: list[list[list[float]]] = field(default_factory=list)  # (layers, KV heads, prompt) per-head scores,
    #   each row in [0, 1]; empty for token-level methods
    head_kept: list[list[list[int]]] = field(default_factory=list)  # (layers, KV heads, kept positions), kv level
    layer_correlation: list[float] = field(default_factory=list)  # per target layer: Pearson r between this
    #   method's per-token scores and the target's true importance at that layer (draft-guided methods)
    note: str = ""  # what differs from the paper at this scale, or why a setting was adjusted
    constraints: list[dict] = field(default_factory=list)  # multi-constraint tasks, per constraint in the task's
    #   order: {"name", "kept": fraction of its value's prompt tokens kept over the (layer, KV head) caches (None: not
    #   found in the prompt), "answer": what the cache gave to its probe, "met": whether that is the value}

    def to_row(self) -> dict:
        """The CLI's JSON row (no per-token arrays)."""
        return {"method": self.method, "budget": self.budget, "accuracy": self.accuracy,
                "agreement": round(self.agreement, 4), "recall": round(self.recall, 4),
                "prefill_ms": round(self.prefill_ms, 1), "decode_ms": round(self.decode_ms, 1),
                "draft_ms": round(self.draft_ms, 1), "kv_bytes": self.kv_bytes,
                "correlation": round(sum(self.layer_correlation) / len(self.layer_correlation), 4)
                if self.layer_correlation else None,
                **({"constraints": {c["name"]: c["met"] for c in self.constraints}} if self.constraints else {}),
                **({"note": self.note} if self.note else {})}


@dataclass
class KVReport:
    """A prompt, the target's true attention importance over it and every method's run."""

    target: str
    drafter: str | None  # draft model preset guiding speckv / specpc (None: no draft-guided method ran)
    task: str  # "passkey", "multikey", "travel", "doc-qa", "summarization", "rag" or a file name
    prompt_ids: list[int]
    prompt_tokens: list[str]  # the text of each prompt token, for the heatmap
    answer: str | None  # the expected answer where the task has one
    true_importance: list[float]  # per prompt token: attention it receives from the full-cache output, in [0, 1]
    true_layer_importance: list[list[float]]  # (layers, prompt) the same per target layer
    full: PressRun  # the full-cache reference (method "full")
    runs: list[PressRun] = field(default_factory=list)
    n_layers: int = 0
    n_kv_heads: int = 0
    settings: dict = field(default_factory=dict)  # window, kernel, lookahead length, seed, …
    constraints: list[dict] = field(default_factory=list)  # multi-constraint tasks: {"name", "label", "value",
    #   "statement", "tokens": indices of the value's prompt tokens inside its statement}

    def rows(self) -> list[dict]:
        return [self.full.to_row()] + [run.to_row() for run in self.runs]

    def to_dict(self) -> dict:
        return asdict(self)
