-- The sample HERA universal schema used by the tests and the demo: the columns the plan uses.
-- `app_users` stands in for Supabase's auth.users.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE IF NOT EXISTS app_users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS core_organizations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_name text NOT NULL,
    organization_code text,
    status text NOT NULL DEFAULT 'active',
    settings jsonb DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS core_entities (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    entity_type text NOT NULL,
    entity_name text NOT NULL,
    entity_code text,
    smart_code text,
    status text NOT NULL DEFAULT 'active',
    metadata jsonb DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS core_relationships (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    from_entity_id text NOT NULL,
    to_entity_id text NOT NULL,
    relationship_type text NOT NULL,
    relationship_direction text DEFAULT 'forward',
    relationship_strength numeric DEFAULT 1.0,
    relationship_data jsonb DEFAULT '{}',
    smart_code text,
    smart_code_status text DEFAULT 'ACTIVE',
    ai_confidence numeric(5,4),
    ai_classification text,
    ai_insights jsonb DEFAULT '{}',
    business_logic jsonb DEFAULT '{}',
    validation_rules jsonb DEFAULT '{}',
    tags text[] DEFAULT '{}',
    is_active boolean NOT NULL DEFAULT true,
    effective_date timestamptz DEFAULT now(),
    expiration_date timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    updated_by text,
    version bigint NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS core_relationships_from_type_idx
    ON core_relationships (from_entity_id, relationship_type);
CREATE INDEX IF NOT EXISTS core_relationships_org_idx ON core_relationships (organization_id);

CREATE TABLE IF NOT EXISTS core_dynamic_data (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL,
    entity_id text NOT NULL,
    field_name text NOT NULL,
    field_type text NOT NULL DEFAULT 'text',
    field_value_text text,
    field_value_number numeric,
    field_value_boolean boolean,
    field_value_date timestamptz,
    field_value_json jsonb,
    field_value_array text[],
    smart_code text,
    validation_status text DEFAULT 'valid',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    updated_by text,
    version bigint NOT NULL DEFAULT 1,
    CONSTRAINT core_dynamic_data_org_entity_field_key UNIQUE (organization_id, entity_id, field_name)
);
