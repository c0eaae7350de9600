"""The search space, its cost model and its latency model. Pure: no Ray, no Optuna, no SQL."""

from space.architecture import SCHEMA, SCHEMA_VERSION, Architecture, Normalization
from space.cost import CostProfile, cost_profile
from space.latency import LatencyModel, LatencySpec
from space.search_space import SearchSpace

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Architecture", "CostProfile", "LatencyModel",
           "LatencySpec", "Normalization", "SearchSpace", "cost_profile"]
