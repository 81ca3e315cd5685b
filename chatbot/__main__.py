"""``python -m chatbot`` is the ``chatbot`` command (used to start background jobs with this interpreter)."""

from chatbot.cli import main

main()
