"""Fast CPU inference of pruned networks: the predictor that picks a dense or sparse path, the
sparse on-disk format, and the one sparse kernel both run. No deep-learning framework."""
