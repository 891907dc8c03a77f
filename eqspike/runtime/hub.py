"""Access to the Hugging Face Hub: decide once whether it can be reached, and if not, make
transformers and datasets use their local caches only, so that a missing model or data set fails in
a second instead of after a minute of retries.

``HF_HUB_OFFLINE=1`` already means offline. Otherwise one TCP connection to the Hub's host (3 s at
most) decides; the answer is kept for the process.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse


@lru_cache(maxsize=1)
def reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub can be reached (False under HF_HUB_OFFLINE=1 without trying)."""
    import huggingface_hub.constants as constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def use_local_caches_if_offline() -> bool:
    """If the Hub cannot be reached, switch transformers and datasets to their caches (their offline
    mode, which they read at import, is set here for this process). Returns whether the Hub is reachable."""
    if reachable():
        return True
    import huggingface_hub.constants as constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    return False
