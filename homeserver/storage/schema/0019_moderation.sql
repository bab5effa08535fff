-- Moderation and the user directory (C-S API "Reporting content", "User directory").

-- Reports of events, rooms and users, kept for the server's operators
-- (`homeserver reports list`). kind is 'event', 'room' or 'user'.
CREATE TABLE content_reports (
    report_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT,
    score BIGINT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX content_reports_received ON content_reports (received_ts);

-- The newest profile each user joined a room with (from m.room.member joins), with the
-- lower-cased text a search matches: the user ID and the display name.
CREATE TABLE user_directory (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    search_text TEXT NOT NULL
);

-- The join rule and history visibility of each room: members of public or world-readable
-- rooms are in everyone's directory.
CREATE TABLE user_directory_rooms (
    room_id TEXT PRIMARY KEY,
    join_rule TEXT,
    history_visibility TEXT
);
