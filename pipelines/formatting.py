"""How numbers read in progress lines and report sections (one definition for every stage)."""


def fmt(x) -> str:
    """A rate for a report line: three decimals, or n/a."""
    return "n/a" if x is None else f"{x:.3f}"
