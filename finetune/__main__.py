"""``python -m finetune ARGS`` runs ``chatbot ARGS``.

This is how ``torchrun -m finetune train ...`` launches the CLI on every process when the ``chatbot`` console
script is not installed (with it installed: ``torchrun --no-python chatbot train ...``).
"""

from chatbot.cli import (
    main,
    train_cmds,  # noqa: F401  (registers the training commands)
)

if __name__ == "__main__":
    main()
