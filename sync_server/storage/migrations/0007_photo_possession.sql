-- Photo possession (privacy): knowing a photo's SHA-256 must not be enough to see it. A crew possesses a photo
-- once one of its devices delivered bytes that hashed to it, or once the photo is shown as available on a ticket
-- the crew holds. Only then does the crew's attach show the photo as available (and let its devices download
-- derivatives), or its upload of that hash complete without sending the bytes.

CREATE TABLE photo_possession (
    sha256    text NOT NULL REFERENCES blobs(sha256),
    crew_id   integer NOT NULL REFERENCES crews(id),
    proven_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, crew_id)
);

-- A ticket's photo is available when this row's crew proved possession, not merely when some blob exists.
ALTER TABLE ticket_photos ADD COLUMN verified boolean NOT NULL DEFAULT false;

-- Photos available before this rule stay available, and their first uploader's crew keeps possession.
UPDATE ticket_photos p SET verified = true WHERE EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = p.sha256);
INSERT INTO photo_possession (sha256, crew_id)
SELECT b.sha256, d.crew_id FROM blobs b JOIN devices d ON d.id = b.uploaded_by ON CONFLICT DO NOTHING;

-- The possession rule, written once: upload creation, attach and HEAD all ask it.
CREATE FUNCTION fs_photo_possessed(sha text, crew integer) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM photo_possession WHERE sha256 = sha AND crew_id = crew)
        OR EXISTS (SELECT 1 FROM ticket_photos p JOIN tickets t ON t.id = p.ticket_id
                   WHERE p.sha256 = sha AND p.verified AND t.holder_crew_id = crew)
$$;
