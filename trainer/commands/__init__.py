"""Every trainer command's handler (``cmd_*``, named in ``recs/cli_commands.py``) and what it
prints. Imports anything of the trainer below it."""
