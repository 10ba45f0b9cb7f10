"""sb3-dreamer: DreamerV3 as a Stable-Baselines3 algorithm."""

from sb3_dreamer.buffers import SequenceBatch, SequenceReplayBuffer
from sb3_dreamer.dreamer import Dreamer
from sb3_dreamer.policies import CnnPolicy, DreamerPolicy, MlpPolicy, MultiInputPolicy
from sb3_dreamer.presets import MODEL_SIZES, DreamerConfig, ModelSize, make_config

__version__ = "0.1.0"

__all__ = [
    "MODEL_SIZES",
    "Dreamer",
    "DreamerConfig",
    "DreamerPolicy",
    "CnnPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "ModelSize",
    "SequenceBatch",
    "SequenceReplayBuffer",
    "__version__",
    "make_config",
]
