"""Money: wallets, payments, invoices, catalogue and orders."""
