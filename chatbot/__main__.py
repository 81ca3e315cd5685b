"""``python -m chatbot`` is the ``chatbot`` command: used to start background jobs with this interpreter, and
by ``torchrun -m chatbot train ...`` to run the same training command on every process."""

from chatbot.cli import main

main()
