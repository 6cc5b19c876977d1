"""``python -m genre_ray.search SPACE.yaml``: the search's command line (:func:`genre_ray.search.main`)."""

import sys

from genre_ray.cli import run
from genre_ray.search import main

sys.exit(run(main))
