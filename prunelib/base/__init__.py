"""The base layer: where state lives (paths), how artifacts are cached and fingerprinted
(provenance), and the vocabulary of pruning strategies every layer above shares."""
