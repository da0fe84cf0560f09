"""Money: the ledger, wallets, rewards, the catalogue, payments and invoices."""
