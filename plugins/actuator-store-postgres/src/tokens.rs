//! API tokens: stored by name with the SHA-256 of their secret, created and revoked in one
//! transaction with their audit entry.

use actuator_core::audit::AuditDraft;
use actuator_core::store::StoreError;
use actuator_core::token::{MAX_TOKENS, NewToken, Role, TokenRecord, validate_token_name};
use sqlx::postgres::PgRow;

use crate::rows::{Cols, backend, fmt_ts};
use crate::store::{Change, PostgresStore, commit, notify, now, seal};

fn token(row: &PgRow) -> Result<TokenRecord, StoreError> {
    let c = Cols::new(row, "api_tokens");
    let role = c.text("role")?;
    Ok(TokenRecord {
        name: c.text("name")?,
        role: Role::parse(&role)
            .map_err(|e| StoreError::Backend(format!("postgres: api_tokens.role: {e}")))?,
        hash: c.text("hash")?,
        created_at: c.ts("created_at")?,
    })
}

impl PostgresStore {
    pub(crate) async fn insert_token(
        &self,
        t: NewToken,
        audit: AuditDraft,
    ) -> Result<TokenRecord, StoreError> {
        validate_token_name(&t.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.guarded(false, async move {
            let at = now();
            let mut tx = self.begin_write().await?;
            let (count, taken): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN name = $1 OR hash = $2 THEN 1 ELSE 0 END), 0) \
                 FROM api_tokens",
            )
            .bind(&t.name)
            .bind(&t.hash)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend("reading tokens"))?;
            if taken > 0 {
                return Err(StoreError::AlreadyExists { what: format!("token {}", t.name) });
            }
            if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_TOKENS {
                return Err(StoreError::Invalid(format!(
                    "{MAX_TOKENS} tokens are stored, the limit; revoke one first"
                )));
            }
            sqlx::query(
                "INSERT INTO api_tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.hash)
            .bind(fmt_ts(at))
            .execute(&mut *tx)
            .await
            .map_err(backend("creating a token"))?;
            notify(&mut tx, Change::Tokens).await?;
            seal(&mut tx, audit, at).await?;
            commit(tx).await?;
            Ok(TokenRecord { name: t.name, role: t.role, hash: t.hash, created_at: at })
        })
        .await
    }

    pub(crate) async fn all_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY name")
            .fetch_all(self.reader())
            .await
            .map_err(backend("listing tokens"))?;
        rows.iter().map(token).collect()
    }

    pub(crate) async fn delete_token(
        &self,
        name: &str,
        audit: AuditDraft,
    ) -> Result<TokenRecord, StoreError> {
        self.guarded(false, async move {
            let at = now();
            let mut tx = self.begin_write().await?;
            let row = sqlx::query("DELETE FROM api_tokens WHERE name = $1 RETURNING *")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("revoking a token"))?;
            let Some(row) = row else {
                return Err(StoreError::NotFound { what: format!("token {name}") });
            };
            let rec = token(&row)?;
            notify(&mut tx, Change::Tokens).await?;
            seal(&mut tx, audit, at).await?;
            commit(tx).await?;
            Ok(rec)
        })
        .await
    }
}
