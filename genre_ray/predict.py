"""``python -m genre_ray.predict``: the command line of :mod:`genre_ray.serving.predict`.

The same as ``genre-ray predict``.
"""

import sys

from genre_ray import cli
from genre_ray.serving.predict import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
