"""Experiment tracking with labml, and progress output that suits where it is shown.

:func:`display_mode` tells where stdout goes, and :class:`Progress` prints accordingly:

* a terminal: labml's live display (a progress line redrawn in place, one line per epoch);
* a notebook (Jupyter, Colab): one block of text updated in place (a display handle), the
  plain lines plus the current step, so a saved notebook keeps one line per epoch, never a
  flood of redraws or escape codes;
* anything else (a file, a pipe, ``nohup``, CI, a job scheduler): plain lines only, one when
  training starts and one per epoch, with no escape codes and no carriage returns.

labml's metric and config files are written under the run folder in every mode; only labml's
screen and file writers are used, so nothing goes to the network.  labml's notebook display imports
``display`` from ``IPython.core.display``, which IPython 9 removed (it lives in ``IPython.display``
since 7.14).  Importing this module changes nothing outside it: labml is imported on first use
(:func:`_labml`), and only then does :func:`patch_ipython` put those names back into IPython, in the
process that is about to track a run.
"""
from __future__ import annotations

import contextlib
import io
import sys
import time
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



def _labml():
    """labml's ``experiment``, ``lab``, ``monit`` and ``tracker``, imported when a run first needs them,
    after :func:`patch_ipython` (the one change this module makes to the process, and only here)."""
    patch_ipython()
    from labml import experiment, lab, monit, tracker
    return experiment, lab, monit, tracker


__all__ = ["start_run", "display_mode", "Progress"]
MODES = ("terminal", "notebook", "plain", "off")


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
        experiment, lab, _, _ = _labml()
        lab.configure({"path": str(log_dir.resolve()), "check_repo_dirty": False})
        experiment.create(name=name, writers={"screen", "file"} if screen else {"file"})
        if config:
            experiment.configs(dict(config))
    return experiment.start()


def display_mode(stream=None) -> str:
    """Where progress goes: "notebook" in a Jupyter or Colab kernel, "terminal" when ``stream``
    (stdout) is a terminal, else "plain"."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and (hasattr(shell, "kernel") or "google.colab" in sys.modules):
            return "notebook"
    except ImportError:
        pass
    stream = sys.stdout if stream is None else stream
    try:
        return "terminal" if stream.isatty() else "plain"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "plain"


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def epoch_line(record: dict, epochs: int, elapsed: float, left: float) -> str:
    """One plain line for an epoch's history record."""
    return (f"epoch {record['epoch']}/{epochs}: lr {record['lr']:.5f}, "
            f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f}, "
            f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}, "
            f"{record['images_per_second']:,.0f} img/s, elapsed {_clock(elapsed)}, left {_clock(left)}")


class _Block:
    """Lines shown as one preformatted block (HTML for the notebook, text for everything else)."""

    def __init__(self, lines):
        self.lines = list(lines)

    def __repr__(self):
        return "\n".join(self.lines)

    def _repr_html_(self):
        import html

        return "<pre>" + html.escape("\n".join(self.lines)) + "</pre>"


class Progress:
    """What a training run shows while it runs, for one display ``mode`` (see :data:`MODES`).

    ``with progress:`` opens the labml run (its files go under ``log_dir``); ``epochs`` and ``steps``
    wrap the two loops; ``start``, ``step`` (at the trainer's log points) and ``epoch_done`` report.
    "off" shows nothing (other ranks of a ``torchrun`` launch, ``screen=False``).
    """

    def __init__(self, mode: str, log_dir: str | Path, config: dict | None = None, name: str = "convmixer",
                 track: bool = True):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode, self.log_dir, self.config, self.name, self.track = mode, log_dir, config, name, track
        self.lines, self._handle, self._run = [], None, None

    def __enter__(self):
        self.t0 = time.perf_counter()
        if self.track:
            with _quiet():  # labml's banner (run id, notices with absolute paths) is not progress
                self._run = start_run(self.name, self.log_dir, self.config, screen=self.mode == "terminal")
                self._run.__enter__()
        return self

    def __exit__(self, *exc):
        if self._run is not None:
            with _quiet():
                self._run.__exit__(*exc)
        return False

    def _show(self, line: str, replace_last: bool = False) -> None:
        if self.mode in ("plain", "terminal"):
            if not replace_last:
                print(line, flush=True)
            return
        if self.mode != "notebook":
            return
        if replace_last and self.lines:
            self.lines[-1] = line
        else:
            self.lines.append(line)
        from IPython.display import display

        if self._handle is None:
            self._handle = display(_Block(self.lines), display_id=True)
        else:
            self._handle.update(_Block(self.lines))

    def start(self, line: str) -> None:
        self._show(line)
        self._stepping = False

    def epochs(self, iterable):
        return _labml()[2].loop(iterable) if self.mode == "terminal" else iterable

    def steps(self, iterable):
        return _labml()[2].enum("train", iterable) if self.mode == "terminal" else enumerate(iterable)

    def step(self, epoch: int, epochs: int, step: int, n_steps: int, train_loss: float) -> None:
        """At a log point: in a notebook, the step line below the finished epochs is rewritten."""
        if self.mode == "notebook":
            self._show(f"epoch {epoch + 1}/{epochs}: step {step}/{n_steps}, train loss {train_loss:.4f}, "
                       f"elapsed {_clock(time.perf_counter() - self.t0)}", replace_last=self._stepping)
            self._stepping = True

    def epoch_done(self, record: dict, epochs: int, done_here: int) -> None:
        """Report ``record``; ``done_here`` epochs ran in this process (for the time left)."""
        if self.track:
            with contextlib.nullcontext() if self.mode == "terminal" else _quiet():
                _labml()[3].save(record["epoch"] - 1, {k: v for k, v in record.items() if k != "epoch"})
        if self.mode in ("plain", "notebook"):
            elapsed = time.perf_counter() - self.t0
            left = elapsed / max(done_here, 1) * (epochs - record["epoch"])
            self._show(epoch_line(record, epochs, elapsed, left), replace_last=self._stepping)
            self._stepping = False
