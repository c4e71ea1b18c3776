"""Running one lab: prepare a run spec (data, weights, masks), execute it in a backend, summarise the record;
data-parallel runs, RBM pre-training, metrics, machine facts, phase costs and result files."""
