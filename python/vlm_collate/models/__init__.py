"""One small module per model family; each names the shared steps it uses."""
