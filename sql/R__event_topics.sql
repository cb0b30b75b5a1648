-- Generated from contracts/events.py by `outbox db generate`; do not edit.
-- A repeatable migration: re-applied whenever its content changes.
DELETE FROM outbox.event_topics
WHERE topic NOT IN ('huleedu.class_management.class.created.v1', 'huleedu.class_management.roster.updated.v1', 'huleedu.class_management.student_matching.requested.v1', 'huleedu.file_service.batch_files.uploaded.v1', 'huleedu.file_service.batch_file.removed.v1', 'huleedu.file_service.batch.validated.v1', 'huleedu.batch_orchestrator.batch.status_changed.v1', 'huleedu.batch_orchestrator.batch.students_associated.v1', 'huleedu.spellchecker.batch.spellcheck_completed.v1', 'huleedu.cj_assessment.batch.assessment_completed.v1', 'huleedu.result_aggregator.results.ready.v1', 'huleedu.platform.maintenance.scheduled.v1');
INSERT INTO outbox.event_topics (topic, service, partitions, description)
VALUES
    ('huleedu.class_management.class.created.v1', 'class_management', 3, 'A class was created.'),
    ('huleedu.class_management.roster.updated.v1', 'class_management', 3, 'Students joined or left a class.'),
    ('huleedu.class_management.student_matching.requested.v1', 'class_management', 3, 'Essays need their students confirmed by the teacher.'),
    ('huleedu.file_service.batch_files.uploaded.v1', 'file_service', 3, 'Files were added to a batch.'),
    ('huleedu.file_service.batch_file.removed.v1', 'file_service', 3, 'A file was removed from a batch.'),
    ('huleedu.file_service.batch.validated.v1', 'file_service', 3, 'A batch''s files were validated (some may have failed).'),
    ('huleedu.batch_orchestrator.batch.status_changed.v1', 'batch_orchestrator', 3, 'A batch was registered, started, completed or failed.'),
    ('huleedu.batch_orchestrator.batch.students_associated.v1', 'batch_orchestrator', 3, 'A batch''s essays were matched to students.'),
    ('huleedu.spellchecker.batch.spellcheck_completed.v1', 'spellchecker', 3, 'Spellchecking of a batch finished.'),
    ('huleedu.cj_assessment.batch.assessment_completed.v1', 'cj_assessment', 3, 'Comparative-judgement assessment of a batch finished.'),
    ('huleedu.result_aggregator.results.ready.v1', 'result_aggregator', 3, 'A batch''s results were aggregated.'),
    ('huleedu.platform.maintenance.scheduled.v1', 'platform', 1, 'Planned maintenance was scheduled.')
ON CONFLICT (topic) DO UPDATE SET
    service = EXCLUDED.service, partitions = EXCLUDED.partitions,
    description = EXCLUDED.description;
