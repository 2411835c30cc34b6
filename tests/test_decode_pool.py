"""Scheduling of the decoding processes."""

import os
import subprocess
import sys

import pytest

from videoprism.collection.decode_pool import DECODER_NICENESS

SCRIPT = """
import os
from videoprism.collection import decode_pool
before = os.nice(0)
decode_pool._lower_priority()
print(os.nice(0) - before)
"""


@pytest.mark.parametrize(
    "setting, added",
    [("7", 7), ("0", 0), (None, DECODER_NICENESS), ("", DECODER_NICENESS), ("soon", DECODER_NICENESS), ("40", 19)],
)
def test_decoding_processes_take_the_niceness_asked_for(setting, added):
    """VIDEOPRISM_DECODER_NICE (capped at 19; unset, empty or not a number: the default) is added to the niceness of
    each decoding process, never to the process that runs the model."""
    env = {k: v for k, v in os.environ.items() if k != "VIDEOPRISM_DECODER_NICE"}
    if setting is not None:
        env["VIDEOPRISM_DECODER_NICE"] = setting
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    start = os.nice(0)
    assert int(done.stdout) == min(added, 19 - start)
