"""The base layer: where state lives (paths), how artifacts are cached and fingerprinted
(provenance), how a user's file is written without risking the previous one (files), and the
vocabulary of pruning strategies every layer above shares."""
