"""jestcore: JEST (joint example selection) as a pure array-API specification.

Everything here works on the arrays you pass in (NumPy, PyTorch, JAX, or any array-API
namespace) and returns arrays of the same namespace and device. No framework is imported.
"""

from jestcore.quality import batch_score, batch_score_embeddings
from jestcore.random import fold_in, gumbel_noise, uniform
from jestcore.scores import easy_reference, hard_learner, learnability, sigmoid_loss_matrix
from jestcore.selection import chunk_sizes, independent_select, joint_select, sub_batch_size
from jestcore.streaming import PairEmbeddings, joint_select_embeddings

__version__ = "0.1.0"

__all__ = [
    "PairEmbeddings",
    "batch_score",
    "batch_score_embeddings",
    "chunk_sizes",
    "easy_reference",
    "fold_in",
    "gumbel_noise",
    "hard_learner",
    "independent_select",
    "joint_select",
    "joint_select_embeddings",
    "learnability",
    "sigmoid_loss_matrix",
    "sub_batch_size",
    "uniform",
]
