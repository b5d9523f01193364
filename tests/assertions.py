"""Shared numeric assertions: one place that checks "max |a - b| <= tol" and prints the figure it measured."""

import torch


def max_abs_diff(actual, expected) -> float:
    """max |actual - expected| over all elements in float64, shapes broadcasting as in torch; NaN or inf give inf."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    diff = (actual.double() - expected.double()).abs()
    if not torch.isfinite(diff).all():
        return float("inf")
    return diff.max().item() if diff.numel() else 0.0


def assert_close(actual, expected, tol: float, what: str) -> float:
    """Assert max |actual - expected| <= tol; prints and returns the figure (``pytest -s`` shows it, failures quote it).

    `what` names the comparison in the message, e.g. "decode vs diffusers". Non-finite values always fail.
    """
    diff = max_abs_diff(actual, expected)
    scale = torch.as_tensor(expected).double().abs().max().item() if torch.as_tensor(expected).numel() else 0.0
    message = f"{what}: max |a - b| = {diff:.3e} (tolerance {tol:.1e}, max |expected| {scale:.3g})"
    print(message)
    assert diff <= tol, message
    return diff


def assert_relative_close(actual, expected, tol: float, what: str) -> float:
    """Assert ||actual - expected||_2 / ||expected||_2 <= tol (relative L2 error); prints and returns the figure."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} differs from the expected {tuple(expected.shape)}")
    error = ((actual - expected).norm() / expected.norm()).item()
    if error != error:  # NaN
        error = float("inf")
    peak = max_abs_diff(actual, expected)
    message = f"{what}: relative L2 error {error:.3e}, max |a - b| = {peak:.3e} (tolerance {tol:.1e} relative)"
    print(message)
    assert error <= tol, message
    return error
