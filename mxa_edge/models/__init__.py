"""Model definitions. ``configs`` is torch-free; the other modules need the [train] extra."""
