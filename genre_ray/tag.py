"""``python -m genre_ray.tag``: the command line of :mod:`genre_ray.serving.tag` (also ``genre-ray tag``)."""

import sys

from genre_ray import cli
from genre_ray.serving.tag import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
