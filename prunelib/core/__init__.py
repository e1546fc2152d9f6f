"""The pure numpy core: pruning masks, the forward pass, least-squares reconstruction,
compaction and evaluation. Arrays in, new arrays out; no deep-learning framework."""
