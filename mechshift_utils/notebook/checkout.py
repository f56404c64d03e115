"""Which checkout a run serves, and whether the imported package is that checkout's.

A virtual environment made by another checkout holds an editable install of *that* checkout's
``mechshift_utils``; a notebook kernel started in ``notebooks/`` would import it instead of the
code beside the notebook. The runner (run_all.sh) therefore puts its checkout first on the
kernels' ``PYTHONPATH`` and names it in ``$MECHSHIFT_CHECKOUT``; :func:`check_checkout`, called
by every notebook through ``NotebookParams.validated()``, stops when the package came from
elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

CHECKOUT_ENV = "MECHSHIFT_CHECKOUT"


class WrongCheckout(RuntimeError):
    """The imported mechshift_utils is not the one of the checkout being run."""


def package_checkout() -> Path:
    """The folder that holds the imported ``mechshift_utils`` package (a checkout's root)."""
    import mechshift_utils

    return Path(mechshift_utils.__file__).resolve().parent.parent


def check_checkout(expected: str | Path | None = None) -> None:
    """Stop unless ``mechshift_utils`` was imported from ``expected`` (default: ``$MECHSHIFT_CHECKOUT``;
    nothing to check when neither is set, e.g. in a kernel started by hand)."""
    expected = expected or os.environ.get(CHECKOUT_ENV)
    if not expected:
        return
    found, wanted = package_checkout(), Path(expected).resolve()
    if found != wanted:
        raise WrongCheckout(
            f"mechshift_utils was imported from {found / 'mechshift_utils'}, but this run serves the checkout "
            f"{wanted}: its notebooks would run another checkout's code. Run {wanted / 'run_all.sh'} (it puts "
            f"{wanted} first on the kernel's PYTHONPATH), or reinstall the environment's package from this "
            f"checkout: pip install -e {wanted}")


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` looks like a mechshift checkout (its package and notebooks side by side)."""
    return (folder / "mechshift_utils").is_dir() and (folder / "notebooks").is_dir()
