"""The append-only, double-entry ledger every movement of money goes through."""
