"""sb3-dreamer: DreamerV3 as a Stable-Baselines3 algorithm."""

from sb3_dreamer.buffers import SequenceBatch, SequenceReplayBuffer
from sb3_dreamer.dreamer import Dreamer
from sb3_dreamer.policies import DreamerPolicy, MlpPolicy
from sb3_dreamer.presets import MODEL_SIZES, DreamerConfig, ModelSize, make_config

__version__ = "0.1.0"

__all__ = [
    "MODEL_SIZES",
    "Dreamer",
    "DreamerConfig",
    "DreamerPolicy",
    "MlpPolicy",
    "ModelSize",
    "SequenceBatch",
    "SequenceReplayBuffer",
    "__version__",
    "make_config",
]
