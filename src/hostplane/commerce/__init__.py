"""Commerce: the wallet, the plan catalogue, server terms, payments."""
