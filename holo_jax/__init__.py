"""holo_jax: a JAX/Flax language-model trainer for device meshes."""

__version__ = "0.1.0"
