#!/usr/bin/env bash
# Development helper, used only before the first release: rebuild migration
# 0001 from the models. After a release, add new revisions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f src/hostplane/migrations/versions/*_0001_*.py
tmp="$(mktemp -d)"
HOSTPLANE_ENVIRONMENT=development HOSTPLANE_DATABASE_URL="sqlite:///$tmp/gen.db" \
    .venv/bin/alembic revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
file="$(ls src/hostplane/migrations/versions/*_0001_*.py)"
sed -i 's/astext_type=Text()/astext_type=sa.Text()/g; s/^Revises: $/Revises:/; /# ### commands auto generated/d; /# ### end Alembic commands/d' "$file"
.venv/bin/ruff format -q "$file"
.venv/bin/ruff check -q --fix "$file" || true
rm -rf "$tmp"
echo "$file"
