"""One `python -m sofa_speechlm.bin.<step>` command-line entry point per pipeline step."""
