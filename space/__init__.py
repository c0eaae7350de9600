"""The search space and its cost model. Pure: no Ray, no Optuna."""

from space.architecture import SCHEMA, SCHEMA_VERSION, Architecture
from space.cost import CostProfile, cost_profile
from space.search_space import SearchSpace

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Architecture", "CostProfile", "SearchSpace",
           "cost_profile"]
