-- The plan's ORIGINAL restore_relationships_from_backup, verbatim except for its name
-- (future-proof-implementation-plan.md, 2.3). A benchmark baseline only: `guard install`
-- never installs this file. bench/guardian.py loads it into its own benchmark database.

-- Bulk relationship restoration function
CREATE OR REPLACE FUNCTION plan_restore_relationships_from_backup(
    backup_table_name text
)
RETURNS TABLE(
    restoration_status text,
    relationships_restored bigint,
    auth_relationships_restored bigint,
    errors_encountered bigint
) AS $$
DECLARE
    total_restored bigint := 0;
    auth_restored bigint := 0;
    error_count bigint := 0;
    backup_record RECORD;
BEGIN
    -- Validate backup table exists
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.tables 
        WHERE table_name = backup_table_name
    ) THEN
        RETURN QUERY SELECT 'ERROR'::text, 0::bigint, 0::bigint, 1::bigint;
        RETURN;
    END IF;
    
    -- Restore relationships from backup
    FOR backup_record IN 
        EXECUTE format('SELECT * FROM %I', backup_table_name)
    LOOP
        BEGIN
            -- Try to restore the relationship
            INSERT INTO core_relationships (
                id, organization_id, from_entity_id, to_entity_id,
                relationship_type, relationship_direction, relationship_strength,
                relationship_data, smart_code, smart_code_status,
                ai_confidence, ai_classification, ai_insights,
                business_logic, validation_rules, is_active,
                effective_date, expiration_date, created_at, updated_at,
                created_by, updated_by, version
            ) VALUES (
                backup_record.id, backup_record.organization_id, 
                backup_record.from_entity_id, backup_record.to_entity_id,
                backup_record.relationship_type, backup_record.relationship_direction, 
                backup_record.relationship_strength, backup_record.relationship_data, 
                backup_record.smart_code, backup_record.smart_code_status,
                backup_record.ai_confidence, backup_record.ai_classification, 
                backup_record.ai_insights, backup_record.business_logic, 
                backup_record.validation_rules, backup_record.is_active,
                backup_record.effective_date, backup_record.expiration_date, 
                backup_record.created_at, backup_record.updated_at,
                backup_record.created_by, backup_record.updated_by, 
                backup_record.version
            ) ON CONFLICT (id) DO NOTHING;
            
            total_restored := total_restored + 1;
            
            -- Count auth relationships
            IF backup_record.relationship_type = 'USER_MEMBER_OF_ORG' THEN
                auth_restored := auth_restored + 1;
            END IF;
            
        EXCEPTION WHEN OTHERS THEN
            error_count := error_count + 1;
            
            -- Log the error
            INSERT INTO critical_system_alerts (alert_type, severity, message, metadata)
            VALUES (
                'RELATIONSHIP_RESTORE_ERROR',
                'WARNING',
                format('Failed to restore relationship %s: %s', backup_record.id, SQLERRM),
                jsonb_build_object(
                    'relationship_id', backup_record.id,
                    'error', SQLERRM,
                    'backup_table', backup_table_name
                )
            );
        END;
    END LOOP;
    
    -- Log the restoration
    INSERT INTO critical_system_alerts (alert_type, severity, message, metadata)
    VALUES (
        'BULK_RELATIONSHIP_RESTORATION',
        'INFO',
        format('Bulk restoration from %s: %s restored, %s errors', 
               backup_table_name, total_restored, error_count),
        jsonb_build_object(
            'backup_table', backup_table_name,
            'total_restored', total_restored,
            'auth_restored', auth_restored,
            'errors', error_count
        )
    );
    
    RETURN QUERY SELECT 
        CASE WHEN error_count = 0 THEN 'SUCCESS' ELSE 'PARTIAL_SUCCESS' END::text,
        total_restored,
        auth_restored,
        error_count;
END;
$$ LANGUAGE plpgsql;
