-- An API key's owner (`synclife keys create --user`): the user its commands act for when their
-- data names none. NULL: the key has no owner, its caller is `key:<key id>`.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS user_id text;
