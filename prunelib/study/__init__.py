"""The study: its grid (config), the tables it computes and the graph of tasks that computes them,
run in local worker processes or on Ray; the recipe study and the analyses."""
