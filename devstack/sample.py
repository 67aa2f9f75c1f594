"""The sample HERA schema and data set, for tests, benchmarks and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql


def schema_sql() -> str:
    return resources.files("devstack").joinpath("sample_schema.sql").read_text()


def create_schema(conn: psycopg.Connection[object], schema: str = "public") -> None:
    """Create the sample tables in ``schema`` (idempotent)."""
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(schema)))
        conn.execute(schema_sql().encode())


@dataclass(frozen=True)
class SampleSize:
    organizations: int = 3
    users: int = 60  # each is a member of one organization; every 5th of a second one too
    other_relationships: int = 200


_SAMPLE_STATEMENTS: tuple[str, ...] = (
    """
    INSERT INTO core_organizations (organization_name, organization_code)
    SELECT 'Salon ' || g, 'ORG' || g FROM generate_series(1, %(orgs)s) g
    """,
    """
    CREATE TEMP TABLE _orgs ON COMMIT DROP AS
      SELECT id, row_number() OVER (ORDER BY organization_code) - 1 AS n
      FROM core_organizations
    """,
    """
    INSERT INTO app_users (email)
    SELECT 'user' || g || '@example.com' FROM generate_series(1, %(users)s) g
    """,
    """
    CREATE TEMP TABLE _users ON COMMIT DROP AS
      SELECT id, row_number() OVER (ORDER BY email) AS n FROM app_users
    """,
    """
    CREATE TEMP TABLE _memberships ON COMMIT DROP AS
      SELECT u.id AS user_id, o.id AS org_id, u.n
      FROM _users u JOIN _orgs o ON o.n = u.n %% %(orgs)s
      UNION ALL
      SELECT u.id, o.id, u.n
      FROM _users u JOIN _orgs o ON o.n = (u.n + 1) %% %(orgs)s
      WHERE u.n %% 5 = 0 AND %(orgs)s > 1
    """,
    """
    INSERT INTO core_entities (organization_id, entity_type, entity_name, entity_code,
                               smart_code)
    SELECT org_id, 'USER', 'User ' || n, user_id::text, 'HERA.AUTH.USER.PROFILE.v1'
    FROM _memberships
    """,
    """
    INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,
        relationship_type, smart_code, relationship_data, ai_confidence, tags)
    SELECT org_id, user_id::text, org_id::text, 'USER_MEMBER_OF_ORG',
           'HERA.AUTH.USER.MEMBERSHIP.v1',
           jsonb_build_object('role', CASE WHEN n %% 10 = 1 THEN 'owner' ELSE 'staff' END),
           0.9900, ARRAY['auth']
    FROM _memberships
    """,
    """
    INSERT INTO core_dynamic_data (organization_id, entity_id, field_name, field_type,
                                   field_value_text, smart_code)
    SELECT org_id, user_id::text, 'role', 'text',
           CASE WHEN n %% 10 = 1 THEN 'owner' ELSE 'staff' END,
           'HERA.SALON.USER.ROLE.v1'
    FROM _memberships
    """,
    """
    INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,
        relationship_type, smart_code, relationship_strength, relationship_data)
    SELECT o.id, 'entity-' || g, 'entity-' || (g + 1),
           (ARRAY['CUSTOMER_HAS_APPOINTMENT', 'SERVICE_IN_CATEGORY',
                  'STAFF_PROVIDES_SERVICE'])[1 + g %% 3],
           (ARRAY['HERA.SALON.APPOINTMENT.BOOKING.v1',
                  'HERA.ACCOUNTING.GL.LINE.v2',
                  'HERA.UNIVERSAL.LINK.V1'])[1 + g %% 3],
           round((g %% 100)::numeric / 7, 6),
           jsonb_build_object('seq', g)
    FROM generate_series(1, %(other)s) g
    JOIN _orgs o ON o.n = g %% %(orgs)s
    """,
)


def load_sample(conn: psycopg.Connection[object], size: SampleSize = SampleSize(),
                schema: str = "public") -> None:
    """Fill the sample tables: organizations, users with memberships and roles, other links.

    Every user gets an active ``USER_MEMBER_OF_ORG`` relationship and a ``role`` dynamic data
    row in each of its organizations; smart codes follow the plan's constraint v3 patterns.
    """
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(schema)))
        params = {"orgs": size.organizations, "users": size.users,
                  "other": size.other_relationships}
        for statement in _SAMPLE_STATEMENTS:
            conn.execute(statement, params)
