-- Generated from contracts/catalog.py by `outbox db catalog-sql`; do not edit.
-- A repeatable migration: re-applied whenever its content changes.
DELETE FROM outbox.notification_catalog
WHERE type NOT IN ('student_matching_confirmation_required', 'student_matching_deadline_approaching', 'batch_validation_failed', 'batch_file_corrupted', 'batch_registration_failed', 'batch_processing_completed', 'batch_processing_failed', 'cj_assessment_results_ready', 'batch_students_associated', 'class_roster_updated', 'class_created', 'batch_files_uploaded', 'batch_file_removed', 'batch_processing_started', 'batch_spellcheck_completed', 'batch_cj_assessment_completed', 'system_maintenance_scheduled');
INSERT INTO outbox.notification_catalog
    (type, service, priority, priority_rank, category, action_required,
     deadline_rule, default_deadline, description)
VALUES
    ('student_matching_confirmation_required', 'class_management', 'critical', 5, 'student_workflow', true, 'required', '86400 seconds'::interval, 'Confirm which students the uploaded essays belong to.'),
    ('student_matching_deadline_approaching', 'class_management', 'critical', 5, 'student_workflow', true, 'required', NULL::interval, 'Student matching must be confirmed before the deadline.'),
    ('batch_validation_failed', 'file_service', 'immediate', 4, 'file_operations', true, 'optional', NULL::interval, 'Uploaded files failed validation; fix and re-upload.'),
    ('batch_file_corrupted', 'file_service', 'immediate', 4, 'file_operations', true, 'optional', NULL::interval, 'A file in the batch is corrupted and must be replaced.'),
    ('batch_registration_failed', 'batch_orchestrator', 'immediate', 4, 'batch_progress', true, 'optional', NULL::interval, 'The batch could not be registered; check its settings and retry.'),
    ('batch_processing_completed', 'batch_orchestrator', 'high', 3, 'batch_progress', false, 'none', NULL::interval, 'Every essay in the batch has been processed.'),
    ('batch_processing_failed', 'batch_orchestrator', 'high', 3, 'batch_progress', true, 'optional', NULL::interval, 'Processing of the batch failed; review the errors and retry.'),
    ('cj_assessment_results_ready', 'result_aggregator', 'high', 3, 'processing_results', false, 'none', NULL::interval, 'Comparative-judgement results are ready to view.'),
    ('batch_students_associated', 'batch_orchestrator', 'standard', 2, 'student_workflow', false, 'none', NULL::interval, 'Students were associated with the batch''s essays.'),
    ('class_roster_updated', 'class_management', 'standard', 2, 'class_management', false, 'none', NULL::interval, 'The class roster changed.'),
    ('class_created', 'class_management', 'standard', 2, 'class_management', false, 'none', NULL::interval, 'A new class was created.'),
    ('batch_files_uploaded', 'file_service', 'standard', 2, 'file_operations', false, 'none', NULL::interval, 'Files were uploaded to the batch.'),
    ('batch_file_removed', 'file_service', 'standard', 2, 'file_operations', false, 'none', NULL::interval, 'A file was removed from the batch.'),
    ('batch_processing_started', 'batch_orchestrator', 'low', 1, 'batch_progress', false, 'none', NULL::interval, 'Processing of the batch has started.'),
    ('batch_spellcheck_completed', 'spellchecker', 'low', 1, 'batch_progress', false, 'none', NULL::interval, 'Spellchecking of the batch is complete.'),
    ('batch_cj_assessment_completed', 'cj_assessment', 'low', 1, 'batch_progress', false, 'none', NULL::interval, 'Comparative-judgement assessment of the batch is complete.'),
    ('system_maintenance_scheduled', 'platform', 'standard', 2, 'system_alerts', false, 'none', NULL::interval, 'Planned maintenance may interrupt the platform.')
ON CONFLICT (type) DO UPDATE SET
    service = EXCLUDED.service, priority = EXCLUDED.priority,
    priority_rank = EXCLUDED.priority_rank, category = EXCLUDED.category,
    action_required = EXCLUDED.action_required,
    deadline_rule = EXCLUDED.deadline_rule,
    default_deadline = EXCLUDED.default_deadline,
    description = EXCLUDED.description;
