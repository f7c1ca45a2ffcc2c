"""Speculative decoding: the step-by-step engine (``engine``), its settings (``config``), records (``records``,
``recorder``), drafters, verifiers, draft trees (``trees``), the lossless check and the benchmark."""

from core.specdec.config import MAX_GAMMA, MAX_NEW_TOKENS, SessionConfig
from core.specdec.engine import MODEL_LOCK, Session, generate

__all__ = ["MAX_GAMMA", "MAX_NEW_TOKENS", "MODEL_LOCK", "Session", "SessionConfig", "generate"]
