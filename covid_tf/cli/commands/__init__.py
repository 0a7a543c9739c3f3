"""Sub-commands of ``python -m covid_tf``."""
