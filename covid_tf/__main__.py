"""Entry point for ``python -m covid_tf``."""

from covid_tf.cli import main

raise SystemExit(main())
