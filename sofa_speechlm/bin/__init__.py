"""One `python -m sofa_speechlm.bin.<step>` command-line entry point per pipeline step."""

import logging

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def setup_logging(level: int | str = logging.INFO) -> None:
    """ESPnet's log format, so the recipe's logs read alike whichever step wrote them."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
