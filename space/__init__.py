"""What can be searched and what it costs: the architecture value, the search space, the one
trace of a network's layers, the cost model (MACs, parameters) and the latency model.

Pure: no Ray, no Optuna, no SQL. Imports ``hetconv`` only.
"""

from space.architecture import SCHEMA, SCHEMA_VERSION, Architecture, Normalization
from space.cost import CostProfile, cost_profile
from space.latency import LatencyModel, LatencySpec, check_latency_budget
from space.parts import MAX_PART, allowed_parts
from space.search_space import SearchSpace
from space.trace import NetworkTrace, SearchableLayer, trace_backbone, trace_network

__all__ = ["MAX_PART", "SCHEMA", "SCHEMA_VERSION", "Architecture", "CostProfile", "LatencyModel",
           "LatencySpec", "NetworkTrace", "Normalization", "SearchSpace", "SearchableLayer",
           "allowed_parts", "check_latency_budget", "cost_profile", "trace_backbone",
           "trace_network"]
