"""Progress bars of the data path (tqdm on stderr): shown on a terminal, silent otherwise (logs, tests, pipes)."""

from __future__ import annotations

from typing import Never

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str, *, position: int = 0, leave: bool = True) -> tqdm[Never]:
    """A bar over ``total`` items; disabled when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, position=position, leave=leave, disable=None,
                dynamic_ncols=True)
