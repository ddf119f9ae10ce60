"""Files shipped inside the package: the default model (``default_model.safetensors``)."""
