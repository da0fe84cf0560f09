"""Servers: placement, lifecycle, power, allocations, subusers and console logs."""
