-- projection `directory`: who studies and teaches where, their grades and their
-- applications, for the lists managers use and for each person's own reads
-- (issue #24: student and teacher lists, self-service reads).
-- A rebuild copies these (CREATE TABLE ... LIKE ... INCLUDING ALL).

-- One row per student or teacher (the Student or Teacher aggregate's id), kept in step
-- with the account's name, e-mail and deactivation.
CREATE TABLE directory_people (
    person_id       uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL,
    institution_id  uuid        NOT NULL,
    -- 'student' or 'teacher'
    role            text        NOT NULL CHECK (role IN ('student', 'teacher')),
    name            text        NOT NULL,
    email           text        NOT NULL,
    birth_date      date,
    active          boolean     NOT NULL,
    created_at      timestamptz NOT NULL,
    global_position bigint      NOT NULL
);
-- The lists: one institution's students or teachers by name or by creation, keyset.
CREATE INDEX directory_people_name_idx ON directory_people (institution_id, role, name, person_id);
CREATE INDEX directory_people_created_idx ON directory_people (institution_id, role, created_at, person_id);
-- Admins list every institution's.
CREATE INDEX directory_people_role_name_idx ON directory_people (role, name, person_id);
-- Account changes find their person; a signed-in user finds itself.
CREATE INDEX directory_people_user_idx ON directory_people (user_id);

-- One row per exam grade (the ExamGrade aggregate's id), with its current note.
CREATE TABLE directory_grades (
    grade_id        uuid        PRIMARY KEY,
    institution_id  uuid        NOT NULL,
    course_id       uuid        NOT NULL,
    student_id      uuid        NOT NULL,
    -- who recorded it, then who last changed it
    teacher_id      uuid        NOT NULL,
    exam_name       text        NOT NULL,
    -- "0.00".."10.00", as the events carry it
    note            text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    changed_at      timestamptz,
    global_position bigint      NOT NULL
);
CREATE INDEX directory_grades_student_idx ON directory_grades (student_id, recorded_at, grade_id);
CREATE INDEX directory_grades_teacher_idx ON directory_grades (teacher_id, course_id, student_id);

-- One row per application, with where its decision stands.
CREATE TABLE directory_applications (
    application_id  uuid        PRIMARY KEY,
    course_id       uuid        NOT NULL,
    institution_id  uuid,
    name            text        NOT NULL,
    email           text        NOT NULL,
    -- 'pending', 'enrolled', 'declined' or 'cancelled'
    status          text        NOT NULL CHECK (status IN ('pending', 'enrolled', 'declined', 'cancelled')),
    requested_at    timestamptz NOT NULL,
    global_position bigint      NOT NULL
);
CREATE INDEX directory_applications_email_idx ON directory_applications (email, requested_at, application_id);

-- A student's own enrollments: `course_enrollments` by the student's e-mail.
CREATE INDEX course_enrollments_email_idx ON course_enrollments (email, enrolled_on);
