"""Experiment tracking with labml: ``tracker`` for metrics, ``monit`` for loops and sections.

Only labml's screen and file writers are used, so nothing goes to the network.  labml's
notebook display imports ``display`` from ``IPython.core.display``, which IPython 9
removed (it lives in ``IPython.display`` since 7.14); :func:`patch_ipython` puts the name
back before labml is imported, so tracking works in a terminal and in Jupyter alike.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path


def patch_ipython() -> None:
    """Give ``IPython.core.display`` the ``display``/``HTML`` names labml still imports from it."""
    try:
        import IPython.core.display as core_display
        import IPython.display as public_display
    except ImportError:  # no IPython: labml uses its terminal writer only
        return
    for name in ("display", "HTML"):
        if not hasattr(core_display, name):
            setattr(core_display, name, getattr(public_display, name))


patch_ipython()

from labml import experiment, lab, monit, tracker  # noqa: E402  (after the patch, on purpose)

__all__ = ["start_run", "monit", "tracker"]


def _quiet():
    """Swallow stdout, and IPython display output when running in a kernel."""
    try:
        from IPython import get_ipython
        from IPython.utils.capture import capture_output

        if get_ipython() is not None:
            return capture_output()
    except ImportError:
        pass
    return contextlib.redirect_stdout(io.StringIO())


def start_run(name: str, log_dir: str | Path, config: dict | None = None, screen: bool = True):
    """Create a labml experiment whose logs go under ``log_dir`` and return its context manager.

    labml looks for a ``.labml.yaml`` next to the calling file and prints notices (with
    absolute paths) when there is none or it is not a git repository; we point it at
    ``log_dir`` instead and keep those notices off the screen, in a terminal and in Jupyter
    (where labml shows them as HTML, not on stdout).
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with _quiet():
        lab.configure({"path": str(log_dir.resolve()), "check_repo_dirty": False})
        experiment.create(name=name, writers={"screen", "file"} if screen else {"file"})
        if config:
            experiment.configs(dict(config))
    return experiment.start()
