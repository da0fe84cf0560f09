"""A user's two balances, coins and credits, read from and moved on the ledger."""
