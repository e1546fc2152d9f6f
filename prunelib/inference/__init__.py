"""Fast CPU inference of pruned networks: the predictor that picks a dense or sparse path, and
the sparse kernels it runs. No deep-learning framework."""
