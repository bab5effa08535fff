-- Dehydrated devices (MSC3814): at most one per user, a device with keys but no access
-- token that receives to-device messages while the user has no client running. device_data
-- is the client's encrypted pickle, opaque to the server. Deleting the device deletes this.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
