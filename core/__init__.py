"""DraftScope's engine: speculative decoding (``specdec``), draft-guided KV methods (``kv``), visual autoregressive
drafting (``var``), the runtime they share (``runtime``, ``attention``), training scripts (``train``) and the command
line (``cli``). Pure torch/transformers: nothing here imports gradio or plotly."""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"  # shipped checkpoints, prompts and documents
