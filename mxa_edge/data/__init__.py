"""Dataset readers (CheXpert layout). Import the submodules directly; nothing heavy is imported here."""
