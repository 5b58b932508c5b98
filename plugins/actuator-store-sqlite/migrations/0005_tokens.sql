-- API tokens: the secret's SHA-256 only, never the secret.
CREATE TABLE api_tokens (
    name       TEXT PRIMARY KEY NOT NULL,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
