"""Model definitions (the [train] extra); their configs (``ModelSpec``) are torch-free data in
``formats.model_spec``."""
