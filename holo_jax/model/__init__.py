"""Models: the GPT decoder, its language-model head and task heads."""
from holo_jax.model.heads import SequenceClassifier
from holo_jax.model.transformer import CHECKPOINT_NAMES, CausalLM, Decoder

__all__ = ["CHECKPOINT_NAMES", "CausalLM", "Decoder", "SequenceClassifier"]
