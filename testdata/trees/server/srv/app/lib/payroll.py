"""Payroll export helpers."""

from decimal import Decimal


def gross_to_net(gross: Decimal, tax_rate: Decimal) -> Decimal:
    """Very rough net salary estimate used by the dashboard."""
    return (gross * (Decimal(1) - tax_rate)).quantize(Decimal("0.01"))
