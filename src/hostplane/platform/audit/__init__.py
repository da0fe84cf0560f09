"""The audit log: who changed what, hash-chained so tampering shows."""
