"""cpsc_lite: a small, readable implementation of CPSC-DFKD.

Conditional Pseudo-Supervised Contrast for Data-Free Knowledge Distillation
(Shao, Zhang, Wang, Pattern Recognition 143, 2023). The book in ``book/``
explains every module; each public function names the chapter that uses it.
"""

__version__ = "0.12.0"


class CpscError(Exception):
    """A problem with the user's input that has a clear fix.

    The command-line interface prints the message (no traceback) and exits
    with status 2, so every message should name the problem *and* the fix.
    """


class Terminated(CpscError):
    """The process was asked to stop (SIGTERM: SLURM, Colab, ``kill``); the run saved a checkpoint at
    the end of its last whole iteration (or epoch) first. The command line exits with status 143."""
