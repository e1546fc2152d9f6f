"""Results on disk and what is drawn and written from them: tidy tables, figures, the report.
No deep-learning framework."""
