"""The Gradio app: Blocks wiring only, one module per tab; the work happens in ``core`` and ``visualizers``."""
