"""Training scripts for the drafters this project ships (full-size runs are scripts; tests run tiny versions)."""
