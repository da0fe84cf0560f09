"""Invoices: numbered per tenant when paid, with lines, totals and a PDF."""
