"""Models: the GPT decoder, its language-model head and task heads, and the remat policies that
name the decoder's checkpoint tags."""
from holo_jax.model.heads import SequenceClassifier
from holo_jax.model.remat import CHECKPOINT_NAMES, REMAT_POLICIES, remat_policy
from holo_jax.model.transformer import CausalLM, Decoder

__all__ = ["CHECKPOINT_NAMES", "REMAT_POLICIES", "CausalLM", "Decoder", "SequenceClassifier", "remat_policy"]
