"""Examples that extend depthsweep from outside depthcore (docs/losses.md, "Loss plugins")."""
