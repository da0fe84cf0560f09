"""Payment gateway adapters: one Protocol (``base``) and one module per gateway."""
