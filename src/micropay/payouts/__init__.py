"""Payouts and revenue sharing: platform fee, splits, payee balances, payouts, verification."""
