"""``python -m perturbscore`` runs the command-line interface."""

from .cli import main

main()
