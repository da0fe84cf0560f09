"""Audit log routes (placeholder)."""

from fastapi import APIRouter

router = APIRouter(tags=["audit"])
