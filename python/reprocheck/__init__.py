"""reprocheck's capture for training scripts.

`reprocheck run -- python train.py` runs a script unchanged: the start-up hook this package installs
switches capture on in the processes reprocheck starts (see docs/python.md). Scripts that want
control use the API below; it does nothing when reprocheck did not launch the script.
"""
from ._api import active, capture, mark_step

__all__ = ["active", "capture", "mark_step"]
from ._core import version as _version

__version__ = _version()
