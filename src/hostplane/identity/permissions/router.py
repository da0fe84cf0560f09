"""``GET /api/permissions`` (placeholder)."""

from fastapi import APIRouter

router = APIRouter(tags=["permissions"])
