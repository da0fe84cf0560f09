"""Role routes (placeholder)."""

from fastapi import APIRouter

router = APIRouter(tags=["roles"])
