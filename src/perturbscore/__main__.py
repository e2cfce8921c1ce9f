"""``python -m perturbscore`` runs the command-line interface."""

from .cli import console

console()
