"""Every table of the panel, imported in one place for Alembic and the tests."""

from hostplane.core.db.base import Base
from hostplane.identity.roles.models import Role, UserRole
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from hostplane.platform.jobs.models import Job, JobWorker

metadata = Base.metadata

__all__ = ["Base", "Job", "JobWorker", "Role", "Tenant", "User", "UserRole", "metadata"]
