-- Who may read and use a question set: its owner (the host who first stored it; '' for sets
-- seeded by the system), its visibility (private, shared, public) and, when shared, the hosts
-- it is shared with (a JSON list of user ids). Sets stored before this had no owner: they
-- become the system's, private, until an admin changes them. Keep it in step with the other
-- dialect's folder.
ALTER TABLE question_sets ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE question_sets ADD COLUMN visibility TEXT NOT NULL DEFAULT 'private';
ALTER TABLE question_sets ADD COLUMN shared_with TEXT NOT NULL DEFAULT '[]';
