-- Ownership (src/journal/ownership.rs): the remote accounts and memberships
-- each provisioner created or adopted, for `remove_only_owned`. Unlike the
-- journal's rows these are never pruned: a row goes when the worker removes
-- what it describes. Times are unix milliseconds; `how` is `created` or
-- `adopted`; `subject` is the match value, for people reading the table.
CREATE TABLE provisioner_owned_account (
    provisioner TEXT    NOT NULL,
    api_id      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    how         TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    PRIMARY KEY (provisioner, api_id)
);

-- `group_name` is the remote group's name, lowercased; `member_id` the
-- member account's API ID.
CREATE TABLE provisioner_owned_membership (
    provisioner TEXT    NOT NULL,
    group_name  TEXT    NOT NULL,
    member_id   TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    how         TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    PRIMARY KEY (provisioner, group_name, member_id)
);

-- An account removed takes its memberships with it.
CREATE INDEX provisioner_owned_membership_member
    ON provisioner_owned_membership (provisioner, member_id);
